import { TdistError } from "../errors/tdist-error.js";
import { isChecksum, KvChecksum } from "./kv-checksum.js";
import type { KvChunks, KvTransferSource } from "./kv-transfer.js";

/** A source with its count and checksum known, opened once per transfer. */
export interface ResolvedKvSource {
  byteCount: number;
  checksum: string;
  open(signal: AbortSignal): KvChunks;
}

/** Validates a source and computes what the handle needs (a pass over lazy chunks when no checksum is given). */
export async function resolveKvSource(source: KvTransferSource, signal: AbortSignal): Promise<ResolvedKvSource> {
  if (source instanceof Uint8Array || Array.isArray(source)) {
    const chunks = source instanceof Uint8Array ? [source] : (source as readonly Uint8Array[]);
    const checksum = new KvChecksum();
    let byteCount = 0;
    for (const chunk of chunks) {
      if (!(chunk instanceof Uint8Array))
        throw new TdistError("invalid_option", "KV transfer chunks must be Uint8Arrays");
      checksum.update(chunk);
      byteCount += chunk.byteLength;
    }
    return { byteCount, checksum: checksum.digest(), open: () => chunks };
  }
  const stream = source as Exclude<KvTransferSource, Uint8Array | readonly Uint8Array[]>;
  const { byteCount, chunks } = stream;
  if (!Number.isSafeInteger(byteCount) || byteCount < 0) {
    throw new TdistError("invalid_option", `KV transfer byteCount must be an integer >= 0, got ${String(byteCount)}`);
  }
  if (stream.checksum !== undefined && !isChecksum(stream.checksum)) {
    throw new TdistError("invalid_option", `KV transfer checksum must be crc32:<8 hex digits>, got ${stream.checksum}`);
  }
  const open = typeof chunks === "function" ? chunks : oneShot(chunks);
  if (stream.checksum !== undefined) return { byteCount, checksum: stream.checksum, open };
  if (typeof chunks !== "function") {
    throw new TdistError(
      "invalid_option",
      "a KV transfer source without a checksum needs chunks as a function (it is read twice)",
    );
  }
  const checksum = new KvChecksum();
  let counted = 0;
  for await (const chunk of chunks(signal)) {
    checksum.update(chunk);
    counted += chunk.byteLength;
  }
  if (counted !== byteCount) {
    throw new TdistError("invalid_option", `KV transfer source yielded ${counted} bytes, byteCount says ${byteCount}`);
  }
  return { byteCount, checksum: checksum.digest(), open };
}

function oneShot(chunks: KvChunks): () => KvChunks {
  let opened = false;
  return () => {
    if (opened) throw new TdistError("kv_transfer_failed", "a one-shot KV transfer source was already read");
    opened = true;
    return chunks;
  };
}

/** Opens any iterable as an async iterator. */
export function asyncIteratorOf(chunks: KvChunks): AsyncIterator<Uint8Array> | Iterator<Uint8Array> {
  if (Symbol.asyncIterator in chunks) return (chunks as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  return (chunks as Iterable<Uint8Array>)[Symbol.iterator]();
}
