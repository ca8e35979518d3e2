import { crc32 } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import { formatChecksum } from "../kv-transfer/kv-checksum.js";
import type { KvChunks, KvFetchOptions, KvTransferHandle, KvTransferPlane } from "../kv-transfer/kv-transfer.js";
import { isKvTransferFallback } from "../kv-transfer/kv-transfer.js";
import { DistributedRuntime } from "../runtime.js";
import type { RuntimeOptions } from "../runtime-options.js";
import { withTimeout } from "../util/abort.js";

export interface KvTransferSuiteOptions {
  /** Options of the sending and the receiving runtime. */
  runtimeOptions: () => RuntimeOptions;
  /** Rewrites a handle before the fetch, e.g. to force the TCP path between two runtimes of one process. */
  route: (handle: KvTransferHandle) => KvTransferHandle;
  /** Most bytes the source may have produced beyond what the consumer took while the consumer is paused. */
  maxBufferedBytes: number;
}

const MiB = 1024 * 1024;

/** `size` bytes of a pattern that depends on the position and the seed, in chunks of `chunkBytes`. */
export function* patternChunks(size: number, chunkBytes = MiB, seed = 1): Generator<Uint8Array> {
  for (let offset = 0; offset < size; offset += chunkBytes) {
    const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, size - offset));
    for (let i = 0; i < chunk.byteLength; i += 4096)
      chunk.fill(((offset + i) / 4096 + seed) & 0xff, i, Math.min(i + 4096, chunk.byteLength));
    yield chunk;
  }
}

export function patternChecksum(size: number, chunkBytes = MiB, seed = 1): string {
  let value = 0;
  for (const chunk of patternChunks(size, chunkBytes, seed)) value = crc32(chunk, value);
  return formatChecksum(value);
}

/** Drains a fetch, returning the byte count and a checksum computed here (not the plane's). */
export async function drainFetch(
  chunks: AsyncIterable<Uint8Array>,
  timeoutMs = 20_000,
): Promise<{ bytes: number; checksum: string; chunks: number }> {
  return withTimeout("drain fetch", timeoutMs, undefined, async () => {
    let bytes = 0;
    let value = 0;
    let count = 0;
    for await (const chunk of chunks) {
      bytes += chunk.byteLength;
      value = crc32(chunk, value);
      count++;
    }
    return { bytes, checksum: formatChecksum(value), chunks: count };
  });
}

export async function expectKvError(promise: Promise<unknown>, code: string, timeoutMs = 5_000): Promise<TdistError> {
  let outcome: unknown;
  try {
    await withTimeout("expected error", timeoutMs, undefined, () => promise);
    outcome = "success";
  } catch (err) {
    outcome = err;
  }
  expect(outcome).toBeInstanceOf(TdistError);
  expect((outcome as TdistError).code).toBe(code);
  return outcome as TdistError;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A source that yields `before` chunks, then waits for `gate` before the rest (or forever). */
function gatedSource(size: number, before: number, gate: Promise<void>): (signal: AbortSignal) => KvChunks {
  return async function* () {
    let index = 0;
    for (const chunk of patternChunks(size)) {
      if (index++ === before) await gate;
      yield chunk;
    }
  };
}

/**
 * The behaviour every KV transfer backend must have, run against `local`
 * and `tcp` with the same assertions: a sending and a receiving runtime.
 */
export function describeKvTransferSuite(name: string, suite: KvTransferSuiteOptions): void {
  describe(`kv transfer (${name})`, () => {
    const runtimes: DistributedRuntime[] = [];

    afterEach(async () => {
      await Promise.all(runtimes.map((runtime) => runtime.shutdown({ graceMs: 100 })));
      runtimes.length = 0;
    });

    async function pair(): Promise<{
      sender: KvTransferPlane;
      receiver: KvTransferPlane;
      sending: DistributedRuntime;
    }> {
      const make = async (runtimeName: string) => {
        const runtime = await DistributedRuntime.create({ env: {}, name: runtimeName, ...suite.runtimeOptions() });
        runtimes.push(runtime);
        return runtime;
      };
      const sending = await make("prefill");
      const receiving = await make("decode");
      return { sender: sending.kvTransfer, receiver: receiving.kvTransfer, sending };
    }

    function fetchFrom(receiver: KvTransferPlane, handle: KvTransferHandle, options?: KvFetchOptions) {
      return receiver.fetch(suite.route(handle), options);
    }

    it(`${name} - round trip of 0 B, 1 B and a few KiB in chunks`, async () => {
      const { sender, receiver } = await pair();
      const cases: Uint8Array[][] = [
        [],
        [Uint8Array.of(7)],
        [Buffer.alloc(3000, 1), Buffer.alloc(0), Buffer.alloc(1099, 2)],
      ];
      for (const chunks of cases) {
        const offer = await sender.offer(chunks);
        const expected = Buffer.concat(chunks);
        expect(offer.handle.byteCount).toBe(expected.byteLength);
        const received: Uint8Array[] = [];
        await withTimeout("fetch", 5_000, undefined, async () => {
          for await (const chunk of fetchFrom(receiver, offer.handle)) received.push(chunk);
        });
        expect(Buffer.concat(received).equals(expected)).toBe(true);
        expect((await offer.settled).result).toBe("sent");
      }
      expect(sender.openOffers).toBe(0);
    });

    it(`${name} - a 64 MiB lazy source crosses whole, beyond the request plane's 16 MiB frame limit`, async () => {
      const { sender, receiver } = await pair();
      const size = 64 * MiB;
      const offer = await sender.offer({ byteCount: size, chunks: () => patternChunks(size) });
      expect(offer.handle.checksum).toBe(patternChecksum(size));
      const result = await drainFetch(fetchFrom(receiver, offer.handle));
      expect(result.bytes).toBe(size);
      expect(result.checksum).toBe(patternChecksum(size));
      expect(await offer.settled).toEqual({ result: "sent", bytesSent: size });
    });

    it(`${name} - the handle is plain JSON and survives a round trip through it`, async () => {
      const { sender, receiver } = await pair();
      const offer = await sender.offer(Buffer.from("kv state"));
      const handle = JSON.parse(JSON.stringify(offer.handle)) as KvTransferHandle;
      const result = await drainFetch(fetchFrom(receiver, handle));
      expect(result.bytes).toBe(8);
    });

    it(`${name} - many concurrent transfers each get their own bytes`, async () => {
      const { sender, receiver } = await pair();
      const offers = await Promise.all(
        Array.from({ length: 24 }, (_, i) => {
          const size = 100_000 + i * 7919;
          return sender.offer({ byteCount: size, chunks: () => patternChunks(size, 16 * 1024, i) });
        }),
      );
      const results = await Promise.all(offers.map((offer) => drainFetch(fetchFrom(receiver, offer.handle))));
      results.forEach((result, i) => {
        const size = 100_000 + i * 7919;
        expect(result).toMatchObject({ bytes: size, checksum: patternChecksum(size, 16 * 1024, i) });
      });
      expect(sender.openOffers).toBe(0);
    });

    it(`${name} - bytes that do not match the handle's checksum end in kv_transfer_checksum`, async () => {
      const { sender, receiver } = await pair();
      const size = 3 * MiB;
      // The offer's checksum is taken from a first read; the transfer reads different bytes.
      let reads = 0;
      const offer = await sender.offer({ byteCount: size, chunks: () => patternChunks(size, MiB, reads++) });
      const error = await expectKvError(drainFetch(fetchFrom(receiver, offer.handle)), "kv_transfer_checksum");
      expect(isKvTransferFallback(error)).toBe(true);
      const wrong = await sender.offer({ byteCount: 4, checksum: "crc32:00000000", chunks: [Buffer.from("abcd")] });
      await expectKvError(drainFetch(fetchFrom(receiver, wrong.handle)), "kv_transfer_checksum");
    });

    it(`${name} - a source that fails mid-stream ends the fetch with kv_transfer_failed and releases the offer`, async () => {
      const { sender, receiver } = await pair();
      let released = 0;
      const offer = await sender.offer(
        {
          byteCount: 4 * MiB,
          checksum: patternChecksum(4 * MiB),
          chunks: async function* () {
            yield* patternChunks(2 * MiB);
            throw new Error("state file vanished");
          },
        },
        { onRelease: () => void released++ },
      );
      await expectKvError(drainFetch(fetchFrom(receiver, offer.handle)), "kv_transfer_failed");
      const outcome = await withTimeout("settled", 2_000, undefined, () => offer.settled);
      expect(outcome.result).toBe("failed");
      expect(released).toBe(1);
    });

    it(`${name} - an offer serves one fetch; a second, or an unknown id, is kv_transfer_not_found`, async () => {
      const { sender, receiver } = await pair();
      const offer = await sender.offer(Buffer.alloc(10));
      await drainFetch(fetchFrom(receiver, offer.handle));
      await expectKvError(drainFetch(fetchFrom(receiver, offer.handle)), "kv_transfer_not_found");
      const unknown = { ...offer.handle, transferId: "123abc" };
      const error = await expectKvError(drainFetch(fetchFrom(receiver, unknown)), "kv_transfer_not_found");
      expect(isKvTransferFallback(error)).toBe(true);
    });

    it(`${name} - an offer nobody fetches expires after its ttl and runs onRelease`, async () => {
      const { sender, receiver } = await pair();
      const releases: string[] = [];
      const offer = await sender.offer(Buffer.alloc(1000), {
        ttlMs: 50,
        onRelease: (outcome) => void releases.push(outcome.result),
      });
      expect(sender.openOffers).toBe(1);
      const outcome = await withTimeout("expiry", 2_000, undefined, () => offer.settled);
      expect(outcome.result).toBe("expired");
      expect(releases).toEqual(["expired"]);
      expect(offer.state).toBe("released");
      expect(sender.openOffers).toBe(0);
      await expectKvError(drainFetch(fetchFrom(receiver, offer.handle)), "kv_transfer_not_found");
    });

    it(`${name} - a stalled sender ends the fetch with timeout and the sender is released`, async () => {
      const { sender, receiver } = await pair();
      const never = deferred();
      const offer = await sender.offer({
        byteCount: 4 * MiB,
        checksum: patternChecksum(4 * MiB),
        chunks: gatedSource(4 * MiB, 1, never.promise),
      });
      const error = await expectKvError(drainFetch(fetchFrom(receiver, offer.handle, { timeoutMs: 200 })), "timeout");
      expect(isKvTransferFallback(error)).toBe(true);
      expect((await withTimeout("settled", 2_000, undefined, () => offer.settled)).result).toBe("failed");
    });

    it(`${name} - the receiver's AbortSignal ends the fetch with cancelled and stops the sender`, async () => {
      const { sender, receiver } = await pair();
      const never = deferred();
      const offer = await sender.offer({
        byteCount: 8 * MiB,
        checksum: patternChecksum(8 * MiB),
        chunks: gatedSource(8 * MiB, 2, never.promise),
      });
      const controller = new AbortController();
      const fetching = withTimeout("fetch", 5_000, undefined, async () => {
        let bytes = 0;
        for await (const chunk of fetchFrom(receiver, offer.handle, { signal: controller.signal })) {
          bytes += chunk.byteLength;
          if (bytes >= MiB) controller.abort();
        }
      });
      const error = await expectKvError(fetching, "cancelled");
      expect(isKvTransferFallback(error)).toBe(false);
      expect((await withTimeout("settled", 2_000, undefined, () => offer.settled)).result).toBe("failed");
    });

    it(`${name} - a break in for await releases the sender`, async () => {
      const { sender, receiver } = await pair();
      let released = 0;
      const offer = await sender.offer(
        { byteCount: 16 * MiB, chunks: () => patternChunks(16 * MiB) },
        { onRelease: () => void released++ },
      );
      await withTimeout("fetch", 5_000, undefined, async () => {
        for await (const _ of fetchFrom(receiver, offer.handle)) break;
      });
      expect((await withTimeout("settled", 2_000, undefined, () => offer.settled)).result).toBe("failed");
      expect(released).toBe(1);
    });

    it(`${name} - the sender's AbortSignal mid-transfer ends the fetch with kv_transfer_failed`, async () => {
      const { sender, receiver } = await pair();
      const controller = new AbortController();
      const never = deferred();
      const offer = await sender.offer(
        { byteCount: 8 * MiB, checksum: patternChecksum(8 * MiB), chunks: gatedSource(8 * MiB, 2, never.promise) },
        { signal: controller.signal },
      );
      const fetching = withTimeout("fetch", 5_000, undefined, async () => {
        let bytes = 0;
        for await (const chunk of fetchFrom(receiver, offer.handle)) {
          bytes += chunk.byteLength;
          if (bytes >= MiB && !controller.signal.aborted) controller.abort();
        }
      });
      await expectKvError(fetching, "kv_transfer_failed");
      expect((await offer.settled).result).toBe("released");
    });

    it(`${name} - the sender's shutdown releases open offers and fails a transfer in progress`, async () => {
      const { sender, receiver, sending } = await pair();
      const releases: string[] = [];
      const waiting = await sender.offer(Buffer.alloc(100), { onRelease: (o) => void releases.push(o.result) });
      const never = deferred();
      const busy = await sender.offer({
        byteCount: 8 * MiB,
        checksum: patternChecksum(8 * MiB),
        chunks: gatedSource(8 * MiB, 2, never.promise),
      });
      const started = deferred();
      const fetching = withTimeout("fetch", 5_000, undefined, async () => {
        for await (const _ of fetchFrom(receiver, busy.handle)) started.resolve();
      });
      fetching.catch(() => {});
      await withTimeout("first chunk", 5_000, undefined, () => started.promise);
      await withTimeout("shutdown", 5_000, undefined, () => sending.shutdown({ graceMs: 100 }));
      expect(releases).toEqual(["released"]);
      expect((await waiting.settled).result).toBe("released");
      expect((await busy.settled).result).toBe("released");
      const error = await expectKvError(fetching, "kv_transfer_failed");
      expect(isKvTransferFallback(error)).toBe(true);
      expect(sender.openOffers).toBe(0);
      await expectKvError(sender.offer(Buffer.alloc(1)), "shutting_down");
    });

    it(`${name} - a slow consumer pauses the source: buffered bytes stay bounded`, async () => {
      const { sender, receiver } = await pair();
      const size = 256 * MiB;
      let produced = 0;
      const offer = await sender.offer({
        byteCount: size,
        checksum: patternChecksum(size),
        chunks: function* () {
          for (const chunk of patternChunks(size)) {
            produced += chunk.byteLength;
            yield chunk;
          }
        },
      });
      let consumed = 0;
      let maxAhead = 0;
      await withTimeout("slow fetch", 60_000, undefined, async () => {
        let nextPause = 0;
        for await (const chunk of fetchFrom(receiver, offer.handle)) {
          consumed += chunk.byteLength;
          if (consumed >= nextPause) {
            nextPause += 32 * MiB;
            // Long enough for an unpaused sender to run far ahead.
            await new Promise((resolve) => setTimeout(resolve, 150));
            maxAhead = Math.max(maxAhead, produced - consumed);
          }
        }
      });
      expect(consumed).toBe(size);
      expect(maxAhead).toBeLessThanOrEqual(suite.maxBufferedBytes);
    });

    it(`${name} - a malformed handle is bad_request, not a fallback`, async () => {
      const { receiver } = await pair();
      const bad = { transferId: "1", address: {}, byteCount: 1, checksum: "crc32:00000000" } as KvTransferHandle;
      const error = await expectKvError(drainFetch(receiver.fetch(bad)), "bad_request");
      expect(isKvTransferFallback(error)).toBe(false);
    });
  });
}
