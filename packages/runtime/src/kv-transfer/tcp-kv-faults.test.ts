import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { DistributedRuntime } from "../runtime.js";
import { drainFetch, expectKvError, patternChecksum, patternChunks } from "../testing/kv-transfer-suite.js";
import { withTimeout } from "../util/abort.js";
import { isKvTransferFallback, type KvTransferHandle } from "./kv-transfer.js";

const MiB = 1024 * 1024;

/** A TCP proxy that forwards to `target` and cuts both sides once `cutAfter` bytes went downstream. */
async function cuttingProxy(target: string, cutAfter: number): Promise<{ address: string; server: Server }> {
  const [host, port] = target.split(":") as [string, string];
  const server = createServer((client) => {
    const upstream = connect({ host, port: Number(port) });
    let forwarded = 0;
    client.on("error", () => {});
    upstream.on("error", () => {});
    client.on("data", (chunk: Buffer) => upstream.write(chunk));
    upstream.on("data", (chunk: Buffer) => {
      forwarded += chunk.byteLength;
      if (forwarded < cutAfter) {
        client.write(chunk);
        return;
      }
      // As a killed process: the kernel resets its connections.
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe("kv transfer (tcp) - faults", () => {
  const runtimes: DistributedRuntime[] = [];
  const servers: Server[] = [];

  afterEach(async () => {
    await Promise.all(runtimes.map((runtime) => runtime.shutdown({ graceMs: 100 })));
    runtimes.length = 0;
    for (const server of servers.splice(0)) server.close();
  });

  async function runtime(): Promise<DistributedRuntime> {
    const made = await DistributedRuntime.create({ env: {}, kvTransfer: { kind: "tcp", host: "127.0.0.1" } });
    runtimes.push(made);
    return made;
  }

  function overTcp(handle: KvTransferHandle, tcp = handle.address.tcp): KvTransferHandle {
    return { ...handle, address: { ...(tcp ? { tcp } : {}) } };
  }

  it("tcp - a sender that dies mid-stream ends the fetch with kv_transfer_failed and frees the sender's offer", async () => {
    const sender = await runtime();
    const receiver = await runtime();
    const size = 32 * MiB;
    const offer = await sender.kvTransfer.offer({ byteCount: size, chunks: () => patternChunks(size) });
    const proxy = await cuttingProxy(offer.handle.address.tcp as string, 4 * MiB);
    servers.push(proxy.server);
    const error = await expectKvError(
      drainFetch(receiver.kvTransfer.fetch(overTcp(offer.handle, proxy.address))),
      "kv_transfer_failed",
    );
    expect(isKvTransferFallback(error)).toBe(true);
    expect((await withTimeout("settled", 2_000, undefined, () => offer.settled)).result).toBe("failed");
    expect(sender.kvTransfer.openOffers).toBe(0);
  });

  it("tcp - a sender that is gone is cannot_connect, a fallback", async () => {
    const sender = await runtime();
    const receiver = await runtime();
    const offer = await sender.kvTransfer.offer(Buffer.alloc(10));
    await sender.shutdown({ graceMs: 0 });
    const error = await expectKvError(drainFetch(receiver.kvTransfer.fetch(overTcp(offer.handle))), "cannot_connect");
    expect(isKvTransferFallback(error)).toBe(true);
  });

  it("tcp - a runtime shut down before first use of the plane refuses offers with shutting_down", async () => {
    const stopped = await runtime();
    await stopped.shutdown({ graceMs: 0 });
    await expectKvError(stopped.kvTransfer.offer(Buffer.alloc(1)), "shutting_down");
  });

  it("tcp - a handle with only the process-local id of a runtime elsewhere is kv_transfer_not_found", async () => {
    const receiver = await runtime();
    const handle = { transferId: "1", address: { local: "kv-elsewhere" }, byteCount: 1, checksum: patternChecksum(1) };
    await expectKvError(drainFetch(receiver.kvTransfer.fetch(handle)), "kv_transfer_not_found");
  });

  it("tcp - the listener is separate from the request plane and ignores its frame limit", async () => {
    const sender = await DistributedRuntime.create({
      env: {},
      maxFrameBytes: 64 * 1024,
      kvTransfer: { kind: "tcp", host: "127.0.0.1" },
    });
    runtimes.push(sender);
    const receiver = await runtime();
    const endpoint = sender.namespace("test").component("prefill").endpoint("generate");
    await endpoint.serve(async function* () {
      yield 1;
    });
    const size = 2 * MiB;
    const offer = await sender.kvTransfer.offer({ byteCount: size, chunks: () => patternChunks(size, size) });
    const client = await endpoint.client();
    const [instance] = await client.waitForInstances({ timeoutMs: 2_000 });
    expect(instance?.transport).not.toEqual({ tcp: offer.handle.address.tcp });
    const result = await drainFetch(receiver.kvTransfer.fetch(overTcp(offer.handle)));
    expect(result).toMatchObject({ bytes: size, checksum: patternChecksum(size, size) });
  });

  it("tcp - throughput of a 256 MiB transfer over loopback against a raw socket pipe", async () => {
    const size = 256 * MiB;
    const chunk = 1 * MiB;
    const raw = await rawPipeSeconds(size, chunk);
    const sender = await runtime();
    const receiver = await runtime();
    const offer = await sender.kvTransfer.offer({
      byteCount: size,
      checksum: patternChecksum(size),
      chunks: () => patternChunks(size),
    });
    const started = performance.now();
    // The plane verifies count and checksum itself; counting here keeps the test's own work out of the time.
    const bytes = await withTimeout("fetch", 60_000, undefined, async () => {
      let count = 0;
      for await (const chunk of receiver.kvTransfer.fetch(overTcp(offer.handle))) count += chunk.byteLength;
      return count;
    });
    const seconds = (performance.now() - started) / 1000;
    expect(bytes).toBe(size);
    const mbps = (bytes: number, s: number) => (bytes / 1e6 / s).toFixed(0);
    console.log(
      `kv transfer 256 MiB over loopback: ${mbps(size, seconds)} MB/s (checksummed, pattern source); ` +
        `raw socket pipe: ${mbps(size, raw)} MB/s; ratio ${(raw / seconds).toFixed(2)}`,
    );
  }, 120_000);
});

/** Seconds to push `size` bytes (the same pattern source) through a plain loopback socket, with backpressure. */
async function rawPipeSeconds(size: number, chunkBytes: number): Promise<number> {
  const server = createServer((socket: Socket) => {
    void (async () => {
      for (const chunk of patternChunks(size, chunkBytes)) {
        if (!socket.write(chunk)) await new Promise((resolve) => socket.once("drain", resolve));
      }
      socket.end();
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    return await withTimeout("raw pipe", 60_000, undefined, async () => {
      const started = performance.now();
      const socket = connect({ host: "127.0.0.1", port });
      let received = 0;
      for await (const data of socket as AsyncIterable<Buffer>) received += data.byteLength;
      if (received !== size) throw new Error(`raw pipe got ${received} bytes`);
      return (performance.now() - started) / 1000;
    });
  } finally {
    server.close();
  }
}
