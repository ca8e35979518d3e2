import { describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import { readEnv } from "./env-var.js";
import { allEnvVars, Env } from "./environment.js";

describe("config - environment registry", () => {
  it("config - declares every variable once, all prefixed TDIST_ and documented", () => {
    const names = allEnvVars().map((v) => v.name);
    expect(new Set(names).size).toBe(names.length);
    for (const v of allEnvVars()) {
      expect(v.name).toMatch(/^TDIST_[A-Z0-9_]+$/);
      expect(v.doc.length).toBeGreaterThan(10);
    }
  });

  it("config - parses values and falls back to defaults", () => {
    expect(readEnv(Env.tcpPort, {})).toBe(0);
    expect(readEnv(Env.tcpPort, { TDIST_TCP_PORT: "4100" })).toBe(4100);
    expect(readEnv(Env.etcdEndpoints, { TDIST_ETCD_ENDPOINTS: "a:1, b:2" })).toEqual(["a:1", "b:2"]);
    expect(readEnv(Env.discovery, { TDIST_DISCOVERY: "etcd" })).toBe("etcd");
  });

  it("config - rejects invalid values with invalid_option naming the variable", () => {
    expect(() => readEnv(Env.tcpPort, { TDIST_TCP_PORT: "abc" })).toThrowError(/TDIST_TCP_PORT/);
    try {
      readEnv(Env.discovery, { TDIST_DISCOVERY: "zookeeper" });
      expect.unreachable();
    } catch (err) {
      expect(TdistError.is(err, "invalid_option")).toBe(true);
    }
  });
});
