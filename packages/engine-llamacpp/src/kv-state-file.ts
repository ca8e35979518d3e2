import { TdistError } from "@tdist/runtime";

/**
 * llama.cpp's sequence state files (`llama_state_seq_save_file`) record the
 * context's KV stream count, which is its sequence count (node-llama-cpp
 * keeps one stream per sequence), and refuse to load into a context with
 * another count ("n_stream mismatch"). A single sequence's state has exactly
 * one non-empty stream, and loading routes it to the target sequence's
 * stream, so the stream count can be rewritten: states travel in a
 * one-stream form and are widened to the target context's count on import.
 *
 * Layout: u32 magic "ggsq", u32 version, u32 token count, tokens (u32 each),
 * u32 stream count, then per stream a u32 cell count and, when non-zero,
 * that stream's cells and data.
 */
const STATE_MAGIC = 0x67677371;

interface ParsedState {
  /** Bytes up to (not including) the stream count. */
  header: Uint8Array;
  /** The one non-empty stream (its cell count and data), or undefined when every stream is empty. */
  section: Uint8Array | undefined;
}

function parse(file: Uint8Array): ParsedState {
  const fail = (why: string): never => {
    throw new TdistError("bad_request", `not a llama.cpp sequence state: ${why}`);
  };
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const u32 = (at: number): number => (at + 4 <= file.byteLength ? view.getUint32(at, true) : fail("truncated"));
  if (u32(0) !== STATE_MAGIC) fail("bad magic");
  const tokenCount = u32(8);
  const streamsAt = 12 + 4 * tokenCount;
  const streams = u32(streamsAt);
  if (streams < 1 || streams > 4096) fail(`stream count ${streams}`);
  let at = streamsAt + 4;
  let skipped = 0;
  while (skipped < streams && u32(at) === 0) {
    at += 4;
    skipped++;
  }
  const header = file.subarray(0, streamsAt);
  if (skipped === streams) {
    if (at !== file.byteLength) fail("bytes after its empty streams");
    return { header, section: undefined };
  }
  const trailing = streams - skipped - 1;
  const end = file.byteLength - 4 * trailing;
  if (end <= at + 4) fail("truncated stream");
  for (let i = 0; i < trailing; i++) if (u32(end + 4 * i) !== 0) fail("more than one non-empty stream");
  return { header, section: file.subarray(at, end) };
}

/** The state rewritten for a context with `streams` KV streams. */
export function withStreamCount(file: Uint8Array, streams: number): Uint8Array {
  const { header, section } = parse(file);
  const emptyStreams = section === undefined ? streams : streams - 1;
  const out = new Uint8Array(header.byteLength + 4 + (section?.byteLength ?? 0) + 4 * emptyStreams);
  out.set(header, 0);
  const view = new DataView(out.buffer);
  view.setUint32(header.byteLength, streams, true);
  if (section !== undefined) out.set(section, header.byteLength + 4);
  // The remaining streams' cell counts are the zeros the array starts with.
  return out;
}

/** The tokens a state file holds. */
export function stateTokens(file: Uint8Array): number[] {
  parse(file);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const count = view.getUint32(8, true);
  return Array.from({ length: count }, (_, i) => view.getUint32(12 + 4 * i, true));
}
