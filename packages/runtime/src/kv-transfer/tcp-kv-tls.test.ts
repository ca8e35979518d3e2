import { afterEach, describe, expect, it } from "vitest";
import { DistributedRuntime } from "../runtime.js";
import type { RuntimeOptions } from "../runtime-options.js";
import {
  describeKvTransferSuite,
  drainFetch,
  expectKvError,
  patternChecksum,
  patternChunks,
} from "../testing/kv-transfer-suite.js";
import { useTestTls } from "../testing/test-tls.js";
import type { KvTransferHandle } from "./kv-transfer.js";

const tls = useTestTls("tdist-kv-tls-");

/** Without its process-local id the handle is fetched over the listener, as from another process. */
function overTcp({ address, ...handle }: KvTransferHandle): KvTransferHandle {
  return { ...handle, address: { tcp: address.tcp } };
}

describeKvTransferSuite("tcp+tls", {
  runtimeOptions: () => ({ kvTransfer: { kind: "tcp", host: "127.0.0.1" }, tcpTls: tls.clusterTls() }),
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

  it("kv transfer tls - a fetcher without TLS or with a tls.stranger's certificate is refused; the offer stays fetchable", async () => {
    const sending = await make({ tcpTls: tls.clusterTls() });
    const size = 3 * 1024 * 1024;
    const offer = await sending.kvTransfer.offer([...patternChunks(size)]);
    const plaintext = await make({ tcpTls: false });
    await expectKvError(drainFetch(plaintext.kvTransfer.fetch(overTcp(offer.handle))), "cannot_connect");
    const intruder = await make({
      tcpTls: {
        certFile: tls.stranger.client.certFile,
        keyFile: tls.stranger.client.keyFile,
        caFile: tls.certs.caFile,
      },
    });
    await expectKvError(drainFetch(intruder.kvTransfer.fetch(overTcp(offer.handle))), "cannot_connect");
    const receiving = await make({ tcpTls: tls.clusterTls() });
    const received = await drainFetch(receiving.kvTransfer.fetch(overTcp(offer.handle)));
    expect(received).toMatchObject({ bytes: size, checksum: patternChecksum(size) });
  });

  it("kv transfer tls - a TLS fetcher of a plaintext sender fails with cannot_connect", async () => {
    const sending = await make({ tcpTls: false });
    const offer = await sending.kvTransfer.offer([Buffer.alloc(10, 1)]);
    const receiving = await make({ tcpTls: tls.clusterTls() });
    await expectKvError(drainFetch(receiving.kvTransfer.fetch(overTcp(offer.handle))), "cannot_connect");
  });
});
