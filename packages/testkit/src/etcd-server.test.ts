import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type EtcdServer, startEtcd } from "./etcd-server.js";
import { freePort } from "./free-port.js";
import { makeTestCertificates } from "./test-certificates.js";
import { TestkitError } from "./testkit-error.js";

const servers: EtcdServer[] = [];

async function start(): Promise<EtcdServer> {
  const server = await startEtcd({ startTimeoutMs: 15_000 });
  servers.push(server);
  return server;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

/** Talks to etcd through its JSON gateway, so the testkit needs no client library. */
async function etcdCall(endpoint: string, path: string, body: object): Promise<Record<string, unknown>> {
  const response = await fetch(`${endpoint}${path}`, {
    method: "POST",
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(3_000),
  });
  expect(response.ok).toBe(true);
  return (await response.json()) as Record<string, unknown>;
}

const b64 = (text: string): string => Buffer.from(text).toString("base64");

async function putKey(endpoint: string, key: string, value: string): Promise<void> {
  await etcdCall(endpoint, "/v3/kv/put", { key: b64(key), value: b64(value) });
}

async function getKey(endpoint: string, key: string): Promise<string | undefined> {
  const result = await etcdCall(endpoint, "/v3/kv/range", { key: b64(key) });
  const kvs = result.kvs as { value: string }[] | undefined;
  return kvs?.[0] ? Buffer.from(kvs[0].value, "base64").toString() : undefined;
}

async function health(endpoint: string): Promise<unknown> {
  const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(3_000) });
  return response.json();
}

describe("etcd server", () => {
  it("etcd server - starts on a free loopback port and reports healthy", async () => {
    const etcd = await start();
    expect(etcd.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(etcd.endpoint).not.toBe("http://127.0.0.1:2379");
    expect(etcd.running).toBe(true);
    expect(await health(etcd.endpoint)).toEqual({ health: "true" });
    await putKey(etcd.endpoint, "a", "1");
    expect(await getKey(etcd.endpoint, "a")).toBe("1");
  });

  it("etcd server - starts on a given client port", async () => {
    const clientPort = await freePort();
    const etcd = await startEtcd({ startTimeoutMs: 15_000, clientPort });
    servers.push(etcd);
    expect(etcd.clientPort).toBe(clientPort);
    expect(etcd.endpoint).toBe(`http://127.0.0.1:${clientPort}`);
    expect(await health(etcd.endpoint)).toEqual({ health: "true" });
  });

  it("etcd server - two servers run side by side on different ports", async () => {
    const [first, second] = await Promise.all([start(), start()]);
    expect(first?.clientPort).not.toBe(second?.clientPort);
    expect(first?.dataDir).not.toBe(second?.dataDir);
  });

  it("etcd server - restart keeps the port and the data", async () => {
    const etcd = await start();
    await putKey(etcd.endpoint, "kept", "yes");
    const pidBefore = etcd.pid;
    await etcd.restart();
    expect(etcd.pid).not.toBe(pidBefore);
    expect(await health(etcd.endpoint)).toEqual({ health: "true" });
    expect(await getKey(etcd.endpoint, "kept")).toBe("yes");
  });

  it("etcd server - kill (SIGKILL) then restart keeps the data", async () => {
    const etcd = await start();
    await putKey(etcd.endpoint, "survives", "crash");
    await etcd.kill();
    expect(etcd.running).toBe(false);
    expect(etcd.pid).toBeUndefined();
    await expect(fetch(`${etcd.endpoint}/health`, { signal: AbortSignal.timeout(1_000) })).rejects.toThrow();
    await etcd.restart();
    expect(await getKey(etcd.endpoint, "survives")).toBe("crash");
  });

  it("etcd server - restart with wipeData starts empty", async () => {
    const etcd = await start();
    await putKey(etcd.endpoint, "gone", "soon");
    await etcd.restart({ wipeData: true });
    expect(await getKey(etcd.endpoint, "gone")).toBeUndefined();
  });

  it("etcd server - stop kills the process, removes the data dir and is final", async () => {
    const etcd = await start();
    const pid = etcd.pid as number;
    await etcd.stop();
    expect(existsSync(etcd.dataDir)).toBe(false);
    expect(() => process.kill(pid, 0)).toThrow();
    await etcd.stop();
    const error = await etcd.restart().catch((err: unknown) => err);
    expect(TestkitError.is(error, "server_stopped")).toBe(true);
  });

  it("etcd server - await using stops the server", async () => {
    let dataDir = "";
    {
      await using etcd = await startEtcd();
      dataDir = etcd.dataDir;
      expect(existsSync(dataDir)).toBe(true);
    }
    expect(existsSync(dataDir)).toBe(false);
  });

  it("etcd server - a missing binary names the Debian package", async () => {
    const error = await startEtcd({ binary: "etcd-not-installed-here" }).catch((err: unknown) => err);
    expect(TestkitError.is(error, "server_not_installed")).toBe(true);
    expect((error as Error).message).toContain("apt-get install etcd-server");
  });

  it("etcd server - a server that exits during startup fails with its output", async () => {
    const error = await startEtcd({ extraArgs: ["--no-such-flag"] }).catch((err: unknown) => err);
    expect(TestkitError.is(error, "server_start_failed")).toBe(true);
    expect((error as Error).message).toContain("no-such-flag");
  });

  it("etcd server - with rootPassword, auth is on: the gateway refuses a read without a token and authenticates root", async () => {
    const server = await startEtcd({ startTimeoutMs: 15_000, rootPassword: "root-pw" });
    servers.push(server);
    expect(server.username).toBe("root");
    const anonymous = await fetch(`${server.endpoint}/v3/kv/range`, {
      method: "POST",
      body: JSON.stringify({ key: b64("k") }),
      signal: AbortSignal.timeout(3_000),
    });
    expect(anonymous.ok).toBe(false);
    await anonymous.body?.cancel();
    const token = await etcdCall(server.endpoint, "/v3/auth/authenticate", { name: "root", password: "root-pw" });
    expect(typeof token.token).toBe("string");
  });

  it("etcd server - with tls it serves https:// and refuses plain http", async () => {
    const dir = await mkdtemp(join(tmpdir(), "tdist-etcd-test-"));
    try {
      const certs = await makeTestCertificates({ dir, hosts: ["127.0.0.1"] });
      const server = await startEtcd({
        startTimeoutMs: 15_000,
        tls: { certFile: certs.server.certFile, keyFile: certs.server.keyFile, caFile: certs.caFile },
      });
      servers.push(server);
      expect(server.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const plain = await fetch(server.endpoint.replace("https:", "http:") + "/health", {
        signal: AbortSignal.timeout(3_000),
      }).then(
        (response) => response.status,
        () => "refused",
      );
      expect(plain).not.toBe(200);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
