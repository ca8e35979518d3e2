import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type KvTransferStreamSource, TdistError } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withStreamCount } from "./kv-state-file.js";
import { stateFileSource, writeTransferredState } from "./kv-state-transfer.js";

const MODEL = "ab".repeat(32);
const OTHER_MODEL = "cd".repeat(32);

/** A state file as llama.cpp writes it: header, tokens, stream count, one non-empty stream at `at`. */
function stateFile(tokens: number[], streams: number, at: number, section: number[]): Uint8Array {
  const words = [0x67677371, 3, tokens.length, ...tokens, streams];
  for (let s = 0; s < streams; s++) words.push(...(s === at ? section : [0]));
  return new Uint8Array(Uint32Array.from(words).buffer);
}

/** The source's bytes in chunks of at most `size` bytes, as a transfer may cut them. */
async function* rechunked(source: KvTransferStreamSource, size: number): AsyncGenerator<Uint8Array> {
  const open = source.chunks as (signal: AbortSignal) => AsyncIterable<Uint8Array>;
  for await (const chunk of open(new AbortController().signal)) {
    for (let at = 0; at < chunk.byteLength; at += size) yield chunk.subarray(at, at + size);
  }
}

describe("kv state transfer", () => {
  let dir: string;
  let next = 0;
  const path = (): string => join(dir, `state-${++next}.bin`);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tdist-kv-state-transfer-"));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("kv state transfer - a state saved with 8 streams arrives laid out for the receiver's stream count, whatever the chunking", async () => {
    const tokens = [5, 6, 7];
    const section = Array.from({ length: 300 }, (_, i) => i + 1);
    const saved = stateFile(tokens, 8, 5, section);
    const from = path();
    await writeFile(from, saved);
    const source = await stateFileSource(from, MODEL);
    expect(source.byteCount).toBe(40 + withStreamCount(saved, 1).byteLength);
    for (const [streams, chunkSize] of [
      [1, 7],
      [4, 1000],
      [3, 1],
    ] as const) {
      const to = path();
      await writeTransferredState(rechunked(source, chunkSize), to, {
        modelFingerprint: MODEL,
        tokenIds: tokens,
        streams,
      });
      expect(new Uint8Array(await readFile(to))).toEqual(withStreamCount(saved, streams));
    }
  });

  it("kv state transfer - another model's state, other tokens or a truncated stream end it with kv_transfer_failed", async () => {
    const tokens = [5, 6, 7];
    const from = path();
    await writeFile(from, stateFile(tokens, 2, 0, [2, 11, 22]));
    const source = await stateFileSource(from, MODEL);
    const cases = [
      { modelFingerprint: OTHER_MODEL, tokenIds: tokens },
      { modelFingerprint: MODEL, tokenIds: [5, 6, 8] },
      { modelFingerprint: MODEL, tokenIds: [5, 6] },
    ];
    for (const expected of cases) {
      const err = await writeTransferredState(rechunked(source, 16), path(), { ...expected, streams: 2 }).catch(
        (e: unknown) => e,
      );
      expect(TdistError.is(err, "kv_transfer_failed")).toBe(true);
    }
    async function* truncated(): AsyncGenerator<Uint8Array> {
      let left = 45;
      for await (const chunk of rechunked(source, 16)) {
        if (left <= 0) return;
        yield chunk.subarray(0, left);
        left -= chunk.byteLength;
      }
    }
    const err = await writeTransferredState(truncated(), path(), {
      modelFingerprint: MODEL,
      tokenIds: tokens,
      streams: 2,
    }).catch((e: unknown) => e);
    expect(TdistError.is(err, "kv_transfer_failed")).toBe(true);
  });

  it("kv state transfer - a file that is not a one-sequence state is refused as it is offered", async () => {
    const notState = path();
    await writeFile(notState, new Uint8Array(64));
    const empty = path();
    await writeFile(empty, stateFile([], 2, -1, []));
    const twoStreams = path();
    await writeFile(twoStreams, new Uint8Array(Uint32Array.from([0x67677371, 3, 1, 9, 2, 2, 1, 1, 2, 1, 1]).buffer));
    for (const file of [notState, empty, twoStreams]) {
      const err = await stateFileSource(file, MODEL).catch((e: unknown) => e);
      expect(TdistError.is(err, "internal")).toBe(true);
    }
  });
});
