import { mkdtemp, readFile, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCertificates, type TestCertificates } from "./test-certificates.js";

let dir: string;
let certs: TestCertificates;
let stranger: TestCertificates;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tdist-certs-"));
  certs = await makeTestCertificates({ dir, hosts: ["127.0.0.1", "localhost"] });
  stranger = await makeTestCertificates({ dir, name: "stranger" });
}, 30_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface HandshakeResult {
  clientAuthorized: boolean;
  serverAuthorized?: boolean;
  error?: string;
}

/**
 * Opens a mutual-TLS server with `serverFiles` and dials it with the given
 * client files; the server answers "yes" or "no": whether it authorised the client.
 */
async function handshake(
  client: { certFile?: string; keyFile?: string; caFile: string },
  serverFiles = certs.server,
): Promise<HandshakeResult> {
  const server = createServer(
    {
      cert: await readFile(serverFiles.certFile),
      key: await readFile(serverFiles.keyFile),
      ca: await readFile(certs.caFile),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (socket: TLSSocket) => socket.end(socket.authorized ? "yes" : "no"),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const socket = connect({
      host: "127.0.0.1",
      port,
      ca: await readFile(client.caFile),
      ...(client.certFile ? { cert: await readFile(client.certFile) } : {}),
      ...(client.keyFile ? { key: await readFile(client.keyFile) } : {}),
    });
    return await withTimeout(
      new Promise<HandshakeResult>((resolve) => {
        let answer = "";
        socket.on("data", (chunk: Buffer) => {
          answer += chunk.toString();
        });
        socket.once("end", () => resolve({ clientAuthorized: socket.authorized, serverAuthorized: answer === "yes" }));
        socket.once("error", (err: NodeJS.ErrnoException) =>
          resolve({ clientAuthorized: false, ...(err.code ? { error: err.code } : {}) }),
        );
      }),
    ).finally(() => socket.destroy());
  } finally {
    server.close();
  }
}

function withTimeout<T>(promise: Promise<T>, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe("test certificates", () => {
  it("test certificates - a client certificate from the CA and the server's name verify both ways", async () => {
    const result = await handshake({ ...certs.client, caFile: certs.caFile });
    expect(result).toEqual({ clientAuthorized: true, serverAuthorized: true });
  });

  it("test certificates - another CA's client certificate is not authorised", async () => {
    const result = await handshake({ ...stranger.client, caFile: certs.caFile });
    expect(result).toEqual({ clientAuthorized: true, serverAuthorized: false });
  });

  it("test certificates - a server certificate without the dialled address fails verification", async () => {
    const elsewhere = await certs.issue("elsewhere", { hosts: ["elsewhere.invalid"] });
    const result = await handshake({ ...certs.client, caFile: certs.caFile }, elsewhere);
    expect(result.error).toBe("ERR_TLS_CERT_ALTNAME_INVALID");
  });

  it("test certificates - issue signs more certificates with the same CA", async () => {
    const extra = await certs.issue("extra", { usage: "client" });
    const result = await handshake({ ...extra, caFile: certs.caFile });
    expect(result).toEqual({ clientAuthorized: true, serverAuthorized: true });
  }, 15_000);
});
