import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import {
  type EtcdServer,
  makeNatsJwtSetup,
  makeTestCertificates,
  type NatsServer,
  startEtcd,
  startNats,
  type TestCertificates,
} from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { within } from "./discovery/discovery-conformance.js";
import { TdistError } from "./errors/tdist-error.js";
import type { Logger } from "./logger.js";
import { DistributedRuntime } from "./runtime.js";
import { collect, wordsHandler } from "./testing/request-plane-suite.js";

/** Everything the runs below logged or threw, as text: the secret scan reads it. */
const seen: string[] = [];

function recordingLogger(bindings: object = {}): Logger {
  const log =
    (level: string) =>
    (obj: object, msg?: string): void => {
      seen.push(`${level} ${msg ?? ""} ${inspect({ ...bindings, ...obj }, { depth: 8 })}`);
    };
  return {
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: (more) => recordingLogger({ ...bindings, ...more }),
  };
}

/**
 * Creating the runtime, or its event plane (NATS connects on first use),
 * fails; the error (message, causes, wire body) joins what is scanned.
 */
async function createFails(env: NodeJS.ProcessEnv): Promise<{ err: TdistError; elapsedMs: number }> {
  const startedAt = Date.now();
  const open = async (): Promise<unknown> => {
    const runtime = await DistributedRuntime.create({ env, logger: recordingLogger(), startupTimeoutMs: 30_000 });
    try {
      if (env.TDIST_EVENT_PLANE === "nats") await runtime.eventPlane();
    } catch (error) {
      return error;
    } finally {
      await runtime.shutdown({ graceMs: 0 });
    }
    throw new Error("the runtime connected");
  };
  const err = await within(
    "the refusal",
    open().then(
      (error) => error,
      (error: unknown) => error,
    ),
    20_000,
  );
  if (!(err instanceof TdistError)) throw err;
  seen.push(inspect(err, { depth: 8 }), JSON.stringify(err.toWire()));
  return { err, elapsedMs: Date.now() - startedAt };
}

let dir: string;
let certs: TestCertificates;
let stranger: TestCertificates;
let etcd: EtcdServer;
let natsUser: NatsServer;
let natsToken: NatsServer;
let natsJwt: NatsServer;
const jwt = makeNatsJwtSetup();
const otherJwt = makeNatsJwtSetup();
const secrets = {
  etcdPassword: `etcd-${randomBytes(12).toString("hex")}`,
  natsPassword: `nats-${randomBytes(12).toString("hex")}`,
  natsToken: `token-${randomBytes(12).toString("hex")}`,
};
let clientKeyBody: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tdist-security-"));
  [certs, stranger] = await Promise.all([
    makeTestCertificates({ dir, hosts: ["127.0.0.1", "localhost"] }),
    makeTestCertificates({ dir, name: "stranger", hosts: ["127.0.0.1", "localhost"] }),
  ]);
  const serverTls = { certFile: certs.server.certFile, keyFile: certs.server.keyFile, caFile: certs.caFile };
  [etcd, natsUser, natsToken, natsJwt] = await Promise.all([
    startEtcd({ tls: { ...serverTls, clientCertAuth: true }, rootPassword: secrets.etcdPassword }),
    startNats({ auth: { user: "tdist", password: secrets.natsPassword }, tls: { ...serverTls, verify: true } }),
    startNats({ auth: { token: secrets.natsToken } }),
    startNats({ jwt }),
  ]);
  await writeFile(join(dir, "etcd-password"), `${secrets.etcdPassword}\n`);
  await writeFile(join(dir, "user.creds"), jwt.userCreds);
  await writeFile(join(dir, "other.creds"), otherJwt.userCreds);
  clientKeyBody = (await readFile(certs.client.keyFile, "utf8")).replace(/-----[^-]+-----/g, "").replace(/\s/g, "");
}, 60_000);

afterAll(async () => {
  await Promise.all([etcd, natsUser, natsToken, natsJwt].map((server) => server?.stop()));
  await rm(dir, { recursive: true, force: true });
});

function etcdEnv(): NodeJS.ProcessEnv {
  return {
    TDIST_DISCOVERY: "etcd",
    TDIST_ETCD_ENDPOINTS: etcd.endpoint,
    TDIST_ETCD_USERNAME: "root",
    TDIST_ETCD_PASSWORD_FILE: join(dir, "etcd-password"),
    TDIST_ETCD_TLS_CA: certs.caFile,
    TDIST_ETCD_TLS_CERT: certs.client.certFile,
    TDIST_ETCD_TLS_KEY: certs.client.keyFile,
  };
}

function natsTlsEnv(): NodeJS.ProcessEnv {
  return {
    TDIST_NATS_TLS_CA: certs.caFile,
    TDIST_NATS_TLS_CERT: certs.client.certFile,
    TDIST_NATS_TLS_KEY: certs.client.keyFile,
  };
}

/** Serves, discovers and calls an endpoint, and sends one event, on a runtime made from `env`. */
async function serveCallAndPublish(env: NodeJS.ProcessEnv): Promise<void> {
  const runtime = await within("runtime create", DistributedRuntime.create({ env, logger: recordingLogger() }), 20_000);
  try {
    const endpoint = runtime.namespace("sec").component("words").endpoint("generate");
    await endpoint.serve(wordsHandler);
    const client = await endpoint.client<{ text: string }, string>();
    await client.waitForInstances({ timeoutMs: 5_000 });
    expect(await collect(client.generate({ text: "a b c" }))).toEqual(["a", "b", "c"]);
    const events = await runtime.eventPlane();
    const subscription = events.subscribe<{ n: number }>("tdist.sec.words.events");
    await within("subscription ready", subscription.ready);
    await events.publish("tdist.sec.words.events", { n: 7 });
    const first = await within("the event", subscription[Symbol.asyncIterator]().next());
    expect(first.value?.payload).toEqual({ n: 7 });
  } finally {
    await runtime.shutdown({ graceMs: 0 });
  }
}

describe("runtime security - real servers with credentials and TLS", () => {
  it("runtime security - etcd with user, password file and mutual TLS, NATS with user, password and mutual TLS: discovery, calls and events work", async () => {
    await serveCallAndPublish({
      ...etcdEnv(),
      ...natsTlsEnv(),
      TDIST_NATS_URL: natsUser.url,
      TDIST_NATS_USER: "tdist",
      TDIST_NATS_PASSWORD: secrets.natsPassword,
      TDIST_REQUEST_PLANE: "nats",
      TDIST_EVENT_PLANE: "nats",
    });
  }, 60_000);

  it("runtime security - a nats:// URL with user:password@ works for every NATS connection", async () => {
    const url = natsUser.url.replace("nats://", `nats://tdist:${secrets.natsPassword}@`);
    await serveCallAndPublish({
      ...natsTlsEnv(),
      TDIST_NATS_URL: url,
      TDIST_REQUEST_PLANE: "nats",
      TDIST_EVENT_PLANE: "nats",
    });
  }, 60_000);

  it("runtime security - a NATS token and a NATS credentials file (JWT auth) connect", async () => {
    await serveCallAndPublish({
      TDIST_NATS_URL: natsToken.url,
      TDIST_NATS_TOKEN: secrets.natsToken,
      TDIST_EVENT_PLANE: "nats",
    });
    await serveCallAndPublish({
      TDIST_NATS_URL: natsJwt.url,
      TDIST_NATS_CREDS: join(dir, "user.creds"),
      TDIST_REQUEST_PLANE: "nats",
      TDIST_EVENT_PLANE: "nats",
    });
  }, 60_000);

  it("runtime security - wrong or missing etcd credentials fail at once with unauthorized, naming etcd", async () => {
    const wrong = await createFails({ ...etcdEnv(), TDIST_ETCD_PASSWORD_FILE: "", TDIST_ETCD_PASSWORD: "not-it" });
    const missing = await createFails({ ...etcdEnv(), TDIST_ETCD_USERNAME: "", TDIST_ETCD_PASSWORD_FILE: "" });
    for (const { err, elapsedMs } of [wrong, missing]) {
      expect(err.code).toBe("unauthorized");
      expect(err.message).toContain(`etcd at ${etcd.endpoint}: authentication failed`);
      // The startup wait is 30 s: a refusal must not wait it out.
      expect(elapsedMs).toBeLessThan(10_000);
    }
  }, 60_000);

  it("runtime security - wrong or missing NATS credentials fail at once with unauthorized, naming NATS", async () => {
    const nats = (extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ TDIST_EVENT_PLANE: "nats", ...extra });
    const runs = [
      await createFails(
        nats({
          ...natsTlsEnv(),
          TDIST_NATS_URL: natsUser.url,
          TDIST_NATS_USER: "tdist",
          TDIST_NATS_PASSWORD: "not-it",
        }),
      ),
      await createFails(
        nats({ ...natsTlsEnv(), TDIST_NATS_URL: natsUser.url.replace("nats://", "nats://tdist:not-it@") }),
      ),
      await createFails(nats({ ...natsTlsEnv(), TDIST_NATS_URL: natsUser.url })),
      await createFails(nats({ TDIST_NATS_URL: natsToken.url, TDIST_NATS_TOKEN: `${secrets.natsToken}x` })),
      await createFails(nats({ TDIST_NATS_URL: natsJwt.url, TDIST_NATS_CREDS: join(dir, "other.creds") })),
      await createFails(nats({ TDIST_NATS_URL: natsJwt.url })),
      // The NATS request plane's own connection fails the same way.
      await createFails({ TDIST_REQUEST_PLANE: "nats", TDIST_NATS_URL: natsToken.url }),
    ];
    for (const { err, elapsedMs } of runs) {
      expect(err.code).toBe("unauthorized");
      expect(err.message).toMatch(/NATS at nats:\/\/127\.0\.0\.1:\d+: authentication failed/);
      expect(elapsedMs).toBeLessThan(10_000);
    }
  }, 90_000);

  it("runtime security - a server certificate from another CA, or no client certificate, is refused with tls_failed", async () => {
    const runs = [
      await createFails({ ...etcdEnv(), TDIST_ETCD_TLS_CA: stranger.caFile }),
      await createFails({ ...etcdEnv(), TDIST_ETCD_TLS_CERT: "", TDIST_ETCD_TLS_KEY: "" }),
      await createFails({
        ...etcdEnv(),
        TDIST_ETCD_TLS_CERT: stranger.client.certFile,
        TDIST_ETCD_TLS_KEY: stranger.client.keyFile,
      }),
      await createFails({
        ...natsTlsEnv(),
        TDIST_EVENT_PLANE: "nats",
        TDIST_NATS_URL: natsUser.url,
        TDIST_NATS_USER: "tdist",
        TDIST_NATS_PASSWORD: secrets.natsPassword,
        TDIST_NATS_TLS_CA: stranger.caFile,
      }),
      await createFails({
        TDIST_EVENT_PLANE: "nats",
        TDIST_NATS_URL: natsUser.url,
        TDIST_NATS_USER: "tdist",
        TDIST_NATS_PASSWORD: secrets.natsPassword,
        TDIST_NATS_TLS_CA: certs.caFile,
      }),
    ];
    for (const { err, elapsedMs } of runs) {
      expect(err.code).toBe("tls_failed");
      expect(elapsedMs).toBeLessThan(10_000);
    }
  }, 90_000);

  it("runtime security - no password, token, key or nkey seed in any log line or error of the runs above", () => {
    const text = seen.join("\n");
    // The scan must have material: the runs logged and failed.
    expect(seen.length).toBeGreaterThan(20);
    expect(text).toContain("authentication failed");
    for (const secret of [
      secrets.etcdPassword,
      secrets.natsPassword,
      secrets.natsToken,
      jwt.userSeed,
      otherJwt.userSeed,
      clientKeyBody,
      clientKeyBody.slice(0, 24),
    ]) {
      expect(text.includes(secret), `a log line or error holds ${secret.slice(0, 6)}…`).toBe(false);
    }
  });
});
