import { createReadStream, createWriteStream } from "node:fs";
import { open } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { type KvTransferStreamSource, TdistError } from "@tdist/runtime";

/**
 * A sequence's KV state as it travels between engines (disaggregated
 * prefill and decode): a 40-byte header (u32 magic "tdkv", u32 version, the
 * 32-byte sha256 of the model's GGUF header), then llama.cpp's state file in
 * its one-stream form (see `kv-state-file.ts`). Both ends stream it: the
 * sender reads the file's few header bytes and then its one non-empty
 * stream, the receiver rewrites the stream count as the bytes go by, so
 * neither holds the state in memory.
 *
 * The model check matters: llama.cpp loads another model's state of the same
 * shape without complaint, and its outputs are then garbage.
 */
const TRANSFER_MAGIC = 0x766b6474;
const TRANSFER_VERSION = 1;
const TRANSFER_HEADER_BYTES = 40;
const STATE_MAGIC = 0x67677371;
const READ_CHUNK_BYTES = 1 << 20;

function fingerprintBytes(fingerprint: string): Buffer {
  const bytes = Buffer.from(fingerprint, "hex");
  if (bytes.byteLength !== 32) throw new TdistError("internal", "a model fingerprint is a sha256 in hex");
  return bytes;
}

function notAState(path: string, why: string): TdistError {
  return new TdistError("internal", `${path} is not a llama.cpp sequence state: ${why}`);
}

/**
 * The transfer form of the state file at `path`, as a lazy source for
 * `KvTransferPlane.offer`. The file must stay until the offer is released.
 */
export async function stateFileSource(path: string, modelFingerprint: string): Promise<KvTransferStreamSource> {
  const file = await open(path, "r");
  let head: Buffer;
  let sectionStart: number;
  let sectionEnd: number;
  try {
    const { size } = await file.stat();
    const read = async (at: number, length: number): Promise<Buffer> => {
      if (at + length > size) throw notAState(path, "truncated");
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await file.read(buffer, 0, length, at);
      if (bytesRead !== length) throw notAState(path, "truncated");
      return buffer;
    };
    const start = await read(0, 12);
    if (start.readUInt32LE(0) !== STATE_MAGIC) throw notAState(path, "bad magic");
    const streamsAt = 12 + 4 * start.readUInt32LE(8);
    const tokensAndStreams = await read(0, streamsAt + 4);
    const streams = tokensAndStreams.readUInt32LE(streamsAt);
    if (streams < 1 || streams > 4096) throw notAState(path, `stream count ${streams}`);
    const cellCounts = await read(streamsAt + 4, Math.min(4 * streams, size - streamsAt - 4));
    let skipped = 0;
    while (skipped < streams && 4 * skipped < cellCounts.byteLength && cellCounts.readUInt32LE(4 * skipped) === 0) {
      skipped++;
    }
    if (skipped === streams) throw notAState(path, "every stream is empty");
    const trailing = streams - skipped - 1;
    sectionStart = streamsAt + 4 + 4 * skipped;
    sectionEnd = size - 4 * trailing;
    if (sectionEnd <= sectionStart + 4) throw notAState(path, "truncated stream");
    const tail = await read(sectionEnd, 4 * trailing);
    for (let i = 0; i < trailing; i++) {
      if (tail.readUInt32LE(4 * i) !== 0) throw notAState(path, "more than one non-empty stream");
    }
    head = Buffer.alloc(TRANSFER_HEADER_BYTES + streamsAt + 4);
    head.writeUInt32LE(TRANSFER_MAGIC, 0);
    head.writeUInt32LE(TRANSFER_VERSION, 4);
    fingerprintBytes(modelFingerprint).copy(head, 8);
    tokensAndStreams.copy(head, TRANSFER_HEADER_BYTES, 0, streamsAt);
    head.writeUInt32LE(1, TRANSFER_HEADER_BYTES + streamsAt);
  } finally {
    await file.close();
  }
  const from = sectionStart;
  const to = sectionEnd;
  return {
    byteCount: head.byteLength + (to - from),
    chunks: (signal) =>
      (async function* () {
        yield head;
        yield* createReadStream(path, { start: from, end: to - 1, highWaterMark: READ_CHUNK_BYTES, signal });
      })(),
  };
}

export interface StateFileExpectation {
  /** The model the state must come from (`LlamaCppModelInfo.fingerprint`). */
  modelFingerprint: string;
  /** The tokens the state must hold, in order. */
  tokenIds: readonly number[];
  /** The receiving context's KV stream count (its sequence count). */
  streams: number;
}

/**
 * Writes transferred bytes (`KvTransferPlane.fetch`) as a state file laid out
 * for the receiving context, with backpressure. A state from another model
 * or of other tokens ends it with `kv_transfer_failed` before much is read:
 * the receiver prefills instead. Errors of `chunks` (the fetch's own checks)
 * pass through; the caller deletes the file on any error.
 */
export async function writeTransferredState(
  chunks: AsyncIterable<Uint8Array>,
  path: string,
  expected: StateFileExpectation,
): Promise<void> {
  const fingerprint = fingerprintBytes(expected.modelFingerprint);
  const tokens = expected.tokenIds;
  const refuse = (why: string): never => {
    throw new TdistError("kv_transfer_failed", `the transferred KV state is not usable here: ${why}`);
  };
  async function* stateBytes(): AsyncGenerator<Uint8Array> {
    // Header, model, state header and tokens, stream count: checked before anything is written.
    const headBytes = TRANSFER_HEADER_BYTES + 12 + 4 * tokens.length + 4;
    const parts: Uint8Array[] = [];
    let buffered = 0;
    let passing = false;
    for await (const chunk of chunks) {
      if (passing) {
        yield chunk;
        continue;
      }
      parts.push(chunk);
      buffered += chunk.byteLength;
      if (buffered >= TRANSFER_HEADER_BYTES + 12) {
        const head = Buffer.concat(parts);
        if (head.readUInt32LE(0) !== TRANSFER_MAGIC || head.readUInt32LE(4) !== TRANSFER_VERSION) {
          refuse("not a tdist llama.cpp KV state");
        }
        if (!head.subarray(8, TRANSFER_HEADER_BYTES).equals(fingerprint)) refuse("made by another model");
        if (head.readUInt32LE(TRANSFER_HEADER_BYTES) !== STATE_MAGIC) refuse("bad state magic");
        const tokenCount = head.readUInt32LE(TRANSFER_HEADER_BYTES + 8);
        if (tokenCount !== tokens.length) refuse(`it holds ${tokenCount} tokens, not ${tokens.length}`);
        if (buffered < headBytes) {
          parts.splice(0, parts.length, head);
          continue;
        }
        for (let i = 0; i < tokens.length; i++) {
          if (head.readUInt32LE(TRANSFER_HEADER_BYTES + 12 + 4 * i) !== tokens[i]) refuse("other tokens");
        }
        const streamsAt = headBytes - 4;
        if (head.readUInt32LE(streamsAt) !== 1) refuse("not in one-stream form");
        head.writeUInt32LE(expected.streams, streamsAt);
        passing = true;
        yield head.subarray(TRANSFER_HEADER_BYTES);
      }
    }
    if (!passing) refuse("truncated");
    // The other streams are empty: their cell counts are zeros.
    if (expected.streams > 1) yield new Uint8Array(4 * (expected.streams - 1));
  }
  await pipeline(stateBytes(), createWriteStream(path, { flags: "wx", mode: 0o600 }));
}
