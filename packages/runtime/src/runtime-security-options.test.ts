import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdDiscovery } from "./discovery/etcd-discovery.js";
import { TdistError } from "./errors/tdist-error.js";
import { resolveRuntimeOptions } from "./runtime-options.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tdist-sec-options-"));
  await writeFile(join(dir, "password"), "from-a-file\n");
  await writeFile(join(dir, "empty"), "");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function refused(run: () => unknown): TdistError {
  try {
    run();
  } catch (err) {
    if (err instanceof TdistError) return err;
    throw err;
  }
  throw new Error("expected a TdistError");
}

describe("runtime security options - etcd", () => {
  it("runtime security options - TDIST_ETCD_* become the etcd discovery's auth and tls; the password may come from a file", () => {
    const options = resolveRuntimeOptions({
      env: {
        TDIST_DISCOVERY: "etcd",
        TDIST_ETCD_ENDPOINTS: "https://etcd:2379",
        TDIST_ETCD_USERNAME: "root",
        TDIST_ETCD_PASSWORD_FILE: join(dir, "password"),
        TDIST_ETCD_TLS_CA: "/ca.pem",
        TDIST_ETCD_TLS_CERT: "/cert.pem",
        TDIST_ETCD_TLS_KEY: "/key.pem",
      },
    });
    expect(options.discovery).toEqual({
      kind: "etcd",
      endpoints: ["https://etcd:2379"],
      auth: { username: "root", password: "from-a-file" },
      tls: { caFile: "/ca.pem", certFile: "/cert.pem", keyFile: "/key.pem" },
    });
  });

  it("runtime security options - a password and its _FILE together, a user without a password, or an empty file are invalid_option", () => {
    const base = { TDIST_DISCOVERY: "etcd", TDIST_ETCD_USERNAME: "root" };
    for (const env of [
      { ...base, TDIST_ETCD_PASSWORD: "pw-direct", TDIST_ETCD_PASSWORD_FILE: join(dir, "password") },
      base,
      { ...base, TDIST_ETCD_PASSWORD_FILE: join(dir, "empty") },
      { ...base, TDIST_ETCD_PASSWORD_FILE: join(dir, "missing") },
    ]) {
      const err = refused(() => resolveRuntimeOptions({ env }));
      expect(err.code).toBe("invalid_option");
      expect(err.message).not.toContain("pw-direct");
      expect(err.message).not.toContain("from-a-file");
    }
  });

  it("runtime security options - etcd TLS needs https:// endpoints; a URL with user:password@ is refused without echoing it", async () => {
    await expect(
      EtcdDiscovery.connect({ endpoints: ["http://127.0.0.1:1"], tls: { caFile: "/ca.pem" } }),
    ).rejects.toMatchObject({ code: "invalid_option" });
    const err = await EtcdDiscovery.connect({ endpoints: ["http://root:pw-in-url@127.0.0.1:1"] }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(TdistError.is(err, "invalid_option")).toBe(true);
    expect((err as Error).message).not.toContain("pw-in-url");
  });
});

describe("runtime security options - NATS", () => {
  it("runtime security options - credentials in TDIST_NATS_URL leave every resolved URL and become nats.auth", () => {
    const options = resolveRuntimeOptions({
      env: {
        TDIST_NATS_URL: "nats://alice:pw-url@nats:4222",
        TDIST_REQUEST_PLANE: "nats",
        TDIST_EVENT_PLANE: "nats",
      },
    });
    expect(options.natsUrl).toBe("nats://nats:4222");
    expect(options.requestPlane).toEqual({ kind: "nats", url: "nats://nats:4222" });
    expect(options.eventPlane).toEqual({ kind: "nats", url: "nats://nats:4222" });
    expect(options.nats).toEqual({ auth: { user: "alice", password: "pw-url" } });
  });

  it("runtime security options - TDIST_NATS_* give token, user and password (or _FILE), credentials file and TLS", () => {
    expect(
      resolveRuntimeOptions({ env: { TDIST_NATS_TOKEN_FILE: join(dir, "password"), TDIST_NATS_TLS_CA: "/ca.pem" } })
        .nats,
    ).toEqual({ auth: { token: "from-a-file" }, tls: { caFile: "/ca.pem" } });
    expect(resolveRuntimeOptions({ env: { TDIST_NATS_USER: "u", TDIST_NATS_PASSWORD: "p" } }).nats).toEqual({
      auth: { user: "u", password: "p" },
    });
    expect(resolveRuntimeOptions({ env: { TDIST_NATS_CREDS: "/u.creds" } }).nats).toEqual({
      auth: { credsFile: "/u.creds" },
    });
    expect(resolveRuntimeOptions({ env: {} }).nats).toEqual({});
  });

  it("runtime security options - URL credentials with TDIST_NATS_TOKEN, or a user without a password, are invalid_option", () => {
    for (const env of [
      { TDIST_NATS_URL: "nats://alice:pw-url@nats:4222", TDIST_NATS_TOKEN: "tok-x" },
      { TDIST_NATS_USER: "u" },
      { TDIST_NATS_TOKEN: "tok-x", TDIST_NATS_TOKEN_FILE: join(dir, "password") },
    ]) {
      const err = refused(() => resolveRuntimeOptions({ env }));
      expect(err.code).toBe("invalid_option");
      expect(err.message).not.toContain("pw-url");
      expect(err.message).not.toContain("tok-x");
    }
  });
});
