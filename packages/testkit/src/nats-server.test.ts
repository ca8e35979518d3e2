import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freePort } from "./free-port.js";
import { makeNatsJwtSetup } from "./nats-credentials.js";
import { type NatsServer, startNats } from "./nats-server.js";
import { makeTestCertificates } from "./test-certificates.js";
import { TestkitError } from "./testkit-error.js";

const servers: NatsServer[] = [];

async function start(): Promise<NatsServer> {
  const server = await startNats({ startTimeoutMs: 15_000 });
  servers.push(server);
  return server;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

/** The server's INFO greeting, the first line a NATS server sends to a new client. */
function readInfo(port: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    let text = "";
    socket.setTimeout(3_000, () => {
      socket.destroy();
      reject(new Error("no INFO within 3 s"));
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      text += chunk;
      const end = text.indexOf("\r\n");
      if (end < 0) return;
      socket.destroy();
      resolve(JSON.parse(text.slice("INFO ".length, end)) as Record<string, unknown>);
    });
    socket.once("error", reject);
  });
}

describe("nats server", () => {
  it("nats server - starts on a free loopback port with JetStream", async () => {
    const nats = await start();
    expect(nats.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    expect(nats.url).not.toBe("nats://127.0.0.1:4222");
    const info = await readInfo(nats.port);
    expect(info.jetstream).toBe(true);
    expect(existsSync(join(nats.storeDir, "jetstream"))).toBe(true);
  });

  it("nats server - starts on a given port", async () => {
    const port = await freePort();
    const nats = await startNats({ startTimeoutMs: 15_000, port });
    servers.push(nats);
    expect(nats.port).toBe(port);
    expect(nats.url).toBe(`nats://127.0.0.1:${port}`);
    expect((await readInfo(port)).port).toBe(port);
  });

  it("nats server - restart keeps the port and the store directory", async () => {
    const nats = await start();
    const idBefore = (await readInfo(nats.port)).server_id;
    await nats.restart();
    const info = await readInfo(nats.port);
    expect(info.server_id).not.toBe(idBefore);
    expect(info.jetstream).toBe(true);
    expect(existsSync(join(nats.storeDir, "jetstream"))).toBe(true);
  });

  it("nats server - kill (SIGKILL) then restart on the same port", async () => {
    const nats = await start();
    await nats.kill();
    expect(nats.running).toBe(false);
    await expect(readInfo(nats.port)).rejects.toThrow();
    await nats.restart();
    expect(nats.running).toBe(true);
    expect((await readInfo(nats.port)).jetstream).toBe(true);
  });

  it("nats server - stop removes the store directory and is final", async () => {
    const nats = await start();
    await nats.stop();
    expect(existsSync(nats.storeDir)).toBe(false);
    const error = await nats.restart().catch((err: unknown) => err);
    expect(TestkitError.is(error, "server_stopped")).toBe(true);
  });

  it("nats server - a missing binary names the Debian package", async () => {
    const error = await startNats({ binary: "nats-server-not-installed-here" }).catch((err: unknown) => err);
    expect(TestkitError.is(error, "server_not_installed")).toBe(true);
    expect((error as Error).message).toContain("apt-get install nats-server");
  });

  it("nats server - with auth and TLS options the server requires them (INFO says so)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "tdist-nats-test-"));
    try {
      const certs = await makeTestCertificates({ dir, hosts: ["127.0.0.1"] });
      const withTls = await startNats({
        auth: { user: "u", password: "p" },
        tls: { certFile: certs.server.certFile, keyFile: certs.server.keyFile, caFile: certs.caFile, verify: true },
        jetstream: false,
      });
      servers.push(withTls);
      expect(await readInfo(withTls.port)).toMatchObject({ auth_required: true, tls_required: true, tls_verify: true });
      const operator = await startNats({ jwt: makeNatsJwtSetup() });
      servers.push(operator);
      const info = await readInfo(operator.port);
      expect(info.auth_required).toBe(true);
      expect(typeof info.nonce).toBe("string");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
