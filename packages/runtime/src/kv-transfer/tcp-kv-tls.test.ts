import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestCertificates, type TestCertificates } from "@tdist/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { TcpTlsOptions } from "../request-plane/tcp-tls.js";
import { DistributedRuntime } from "../runtime.js";
import type { RuntimeOptions } from "../runtime-options.js";
import {
  describeKvTransferSuite,
  drainFetch,
  expectKvError,
  patternChecksum,
  patternChunks,
} from "../testing/kv-transfer-suite.js";
import type { KvTransferHandle } from "./kv-transfer.js";

let dir: string;
let certs: TestCertificates;
let stranger: TestCertificates;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tdist-kv-tls-"));
  certs = await makeTestCertificates({ dir, hosts: ["127.0.0.1"] });
  stranger = await makeTestCertificates({ dir, name: "stranger", hosts: ["127.0.0.1"] });
}, 30_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function clusterTls(): TcpTlsOptions {
  return { certFile: certs.server.certFile, keyFile: certs.server.keyFile, caFile: certs.caFile };
}

/** Without its process-local id the handle is fetched over the listener, as from another process. */
function overTcp({ address, ...handle }: KvTransferHandle): KvTransferHandle {
  return { ...handle, address: { tcp: address.tcp } };
}

describeKvTransferSuite("tcp+tls", {
  runtimeOptions: () => ({ kvTransfer: { kind: "tcp", host: "127.0.0.1" }, tcpTls: clusterTls() }),
  route: overTcp,
  maxBufferedBytes: 16 * 1024 * 1024,
});

describe("kv transfer - TLS refusals", () => {
  const runtimes: DistributedRuntime[] = [];

  afterEach(async () => {
    await Promise.all(runtimes.map((runtime) => runtime.shutdown({ graceMs: 100 })));
    runtimes.length = 0;
  });

  async function make(options: RuntimeOptions): Promise<DistributedRuntime> {
    const runtime = await DistributedRuntime.create({
      env: {},
      kvTransfer: { kind: "tcp", host: "127.0.0.1" },
      ...options,
    });
    runtimes.push(runtime);
    return runtime;
  }

  it("kv transfer tls - a fetcher without TLS or with a stranger's certificate is refused; the offer stays fetchable", async () => {
    const sending = await make({ tcpTls: clusterTls() });
    const size = 3 * 1024 * 1024;
    const offer = await sending.kvTransfer.offer([...patternChunks(size)]);
    const plaintext = await make({ tcpTls: false });
    await expectKvError(drainFetch(plaintext.kvTransfer.fetch(overTcp(offer.handle))), "cannot_connect");
    const intruder = await make({
      tcpTls: { certFile: stranger.client.certFile, keyFile: stranger.client.keyFile, caFile: certs.caFile },
    });
    await expectKvError(drainFetch(intruder.kvTransfer.fetch(overTcp(offer.handle))), "cannot_connect");
    const receiving = await make({ tcpTls: clusterTls() });
    const received = await drainFetch(receiving.kvTransfer.fetch(overTcp(offer.handle)));
    expect(received).toMatchObject({ bytes: size, checksum: patternChecksum(size) });
  });

  it("kv transfer tls - a TLS fetcher of a plaintext sender fails with cannot_connect", async () => {
    const sending = await make({ tcpTls: false });
    const offer = await sending.kvTransfer.offer([Buffer.alloc(10, 1)]);
    const receiving = await make({ tcpTls: clusterTls() });
    await expectKvError(drainFetch(receiving.kvTransfer.fetch(overTcp(offer.handle))), "cannot_connect");
  });
});
