import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { type NatsServer, startNats } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { within } from "../discovery/discovery-conformance.js";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import { connectNats, drainNats } from "./nats-connection.js";
import { natsServersForLog, resolveNatsSecurity, splitNatsUrlCredentials } from "./nats-security.js";

function expectCode(run: () => unknown, code: string): TdistError {
  try {
    run();
  } catch (err) {
    expect(TdistError.is(err) ? err.code : err).toBe(code);
    return err as TdistError;
  }
  throw new Error(`expected ${code}`);
}

describe("nats security - options", () => {
  it("nats security - credentials move out of the URLs: user:password@ and token@", () => {
    expect(splitNatsUrlCredentials(["nats://alice:s%40cret@10.0.0.1:4222", "nats://10.0.0.2:4222"])).toEqual({
      urls: ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"],
      auth: { user: "alice", password: "s@cret" },
    });
    expect(splitNatsUrlCredentials(["tok123@host:4222"])).toEqual({ urls: ["host:4222"], auth: { token: "tok123" } });
    expect(splitNatsUrlCredentials(["nats://host:4222"])).toEqual({ urls: ["nats://host:4222"], auth: {} });
  });

  it("nats security - URLs with different credentials, or URL and option credentials together, are invalid_option without the secret", () => {
    const mixed = expectCode(
      () => splitNatsUrlCredentials(["nats://a:pw-one@h1:4222", "nats://a:pw-two@h2:4222"]),
      "invalid_option",
    );
    expect(mixed.message).not.toContain("pw-");
    const both = expectCode(
      () => resolveNatsSecurity(["nats://a:pw-one@h1:4222"], { token: "tok" }, undefined),
      "invalid_option",
    );
    expect(both.message).not.toContain("pw-one");
  });

  it("nats security - one way to authenticate; TLS certificate and key together; files must be readable", async () => {
    expectCode(
      () => resolveNatsSecurity(["nats://h:4222"], { token: "t", user: "u", password: "p" }, undefined),
      "invalid_option",
    );
    expectCode(() => resolveNatsSecurity(["nats://h:4222"], { user: "u" }, undefined), "invalid_option");
    expectCode(() => resolveNatsSecurity(["nats://h:4222"], undefined, { certFile: "/x.pem" }), "invalid_option");
    expectCode(
      () => resolveNatsSecurity(["nats://h:4222"], undefined, { caFile: "/no/such/ca.pem" }),
      "invalid_option",
    );
    expectCode(
      () => resolveNatsSecurity(["nats://h:4222"], { credsFile: "/no/such.creds" }, undefined),
      "invalid_option",
    );
    const dir = await mkdtemp(join(tmpdir(), "tdist-nats-sec-"));
    try {
      await writeFile(join(dir, "bad.creds"), "not a creds file");
      expectCode(
        () => resolveNatsSecurity(["nats://h:4222"], { credsFile: join(dir, "bad.creds") }, undefined),
        "invalid_option",
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    expect(resolveNatsSecurity(["nats://u:p@h:4222"], undefined, undefined)).toMatchObject({
      servers: ["nats://h:4222"],
      connectOptions: { user: "u", pass: "p" },
      authKind: "user",
    });
  });

  it("nats security - servers named in logs have their credentials masked", () => {
    expect(natsServersForLog(["nats://alice:secret@h:4222", "tok@h2:4222", "nats://h3:4222"])).toBe(
      "nats://***@h:4222,***@h2:4222,nats://h3:4222",
    );
  });
});

describe("nats security - a real nats-server with a user and password", () => {
  let nats: NatsServer;
  beforeAll(async () => {
    nats = await startNats({ auth: { user: "alice", password: "pw-in-url-9f3" }, jetstream: false });
  }, 30_000);
  afterAll(async () => {
    await nats?.stop();
  });

  it("nats security - connectNats with user:password@ in the URL connects, and no log line or error carries the password", async () => {
    const lines: string[] = [];
    const logger = (bindings: object): Logger => {
      const log = (obj: object, msg?: string): void => {
        lines.push(`${msg ?? ""} ${inspect({ ...bindings, ...obj }, { depth: 6 })}`);
      };
      return { debug: log, info: log, warn: log, error: log, child: (more) => logger({ ...bindings, ...more }) };
    };
    const address = nats.url.replace("nats://", "");
    const good = await within(
      "connect",
      connectNats({ url: `nats://alice:pw-in-url-9f3@${address}`, logger: logger({}) }),
    );
    await drainNats(good.connection);
    const refused = await within(
      "refusal",
      connectNats({ url: `nats://alice:pw-wrong-77a@${address}`, logger: logger({}), connectTimeoutMs: 30_000 }).then(
        () => undefined,
        (err: unknown) => err,
      ),
    );
    expect(TdistError.is(refused, "unauthorized")).toBe(true);
    lines.push(inspect(refused, { depth: 6 }));
    expect(lines.length).toBeGreaterThan(1);
    const text = lines.join("\n");
    expect(text).toContain(address);
    expect(text).not.toContain("pw-in-url-9f3");
    expect(text).not.toContain("pw-wrong-77a");
  });
});
