import { xxh3 } from "@node-rs/xxhash";
import { TdistError } from "@tdist/runtime";
import type { KvStoredBlock } from "./kv-events.js";

/**
 * The one KV block hashing function, shared by the KV router and every engine
 * that publishes KV events, so that both sides name a cached prefix the same
 * way (docs/architecture.md, "KV-aware routing").
 *
 * A prompt is cut into full blocks of `blockSize` token ids (a trailing
 * partial block is never hashed: it cannot be shared). Each token id is
 * written as a little-endian u32. With `xxh3(bytes)` meaning XXH3-64 with
 * seed {@link BLOCK_HASH_SEED}:
 *
 * ```
 * local[i] = xxh3(LE32(block_i tokens))                      the block's tokens alone
 * seq[0]   = local[0]
 * seq[i]   = xxh3(LE64(seq[i-1]) ++ LE32(block_i tokens))    for i >= 1
 * ```
 *
 * `seq[i]` therefore identifies the whole prefix up to and including block
 * `i`. Hashes travel as lower-case hex of the unsigned 64-bit value, padded to
 * 16 digits (`"00ab..."`); the padding makes them fixed-width map keys.
 */
export const BLOCK_HASH_SEED = 1337n;

const U64_BYTES = 8;
const U32_BYTES = 4;
const U32_MAX = 0xffff_ffff;

function toHex(value: bigint): string {
  return value.toString(16).padStart(16, "0");
}

function checkBlockSize(blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    throw new TdistError("invalid_option", `blockSize must be a positive integer, got ${String(blockSize)}`);
  }
}

function writeTokens(view: DataView, offset: number, tokens: ArrayLike<number>, start: number, end: number): void {
  for (let i = start, at = offset; i < end; i++, at += U32_BYTES) {
    const token = tokens[i] as number;
    if (!Number.isInteger(token) || token < 0 || token > U32_MAX) {
      throw new TdistError("bad_request", `token id at index ${i} is not a u32: ${String(token)}`);
    }
    view.setUint32(at, token, true);
  }
}

/** `local` hash of one block: XXH3-64 (seed 1337) of its tokens as LE u32, as a bigint. */
export function hashTokenBlock(tokens: ArrayLike<number>): bigint {
  const bytes = new Uint8Array(tokens.length * U32_BYTES);
  writeTokens(new DataView(bytes.buffer), 0, tokens, 0, tokens.length);
  return xxh3.xxh64(bytes, BLOCK_HASH_SEED);
}

/**
 * Chains one block onto its parent: `xxh3(LE64(parent) ++ LE32(tokens))`, or
 * the block's local hash when `parentHash` is null (the first block). Hashes
 * are the hex strings this module produces. Engines use it to extend a
 * sequence's hashes one block at a time as decode fills blocks.
 */
export function chainBlockHash(parentHash: string | null, tokens: ArrayLike<number>): KvStoredBlock {
  const local = hashTokenBlock(tokens);
  if (parentHash === null) {
    const hex = toHex(local);
    return { blockHash: hex, tokensHash: hex };
  }
  return { blockHash: toHex(chain(parseBlockHash(parentHash), tokens, 0, tokens.length)), tokensHash: toHex(local) };
}

function chain(parent: bigint, tokens: ArrayLike<number>, start: number, end: number): bigint {
  const bytes = new Uint8Array(U64_BYTES + (end - start) * U32_BYTES);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, parent, true);
  writeTokens(view, U64_BYTES, tokens, start, end);
  return xxh3.xxh64(bytes, BLOCK_HASH_SEED);
}

/** Parses a hash written by this module back into its 64-bit value; throws `bad_request`. */
export function parseBlockHash(hash: string): bigint {
  if (!/^[0-9a-f]{1,16}$/.test(hash)) {
    throw new TdistError(
      "bad_request",
      `invalid block hash ${JSON.stringify(hash)}: expected up to 16 lower-case hex digits`,
    );
  }
  return BigInt(`0x${hash}`);
}

/**
 * Hashes every full block of `tokens` (a trailing partial block is left
 * out), returning for each its chained `blockHash` and its local
 * `tokensHash`, in order. `result[i].blockHash` is the parent of block `i+1`.
 *
 * ```ts
 * const blocks = computeBlockHashes(prompt, card.kvBlockSize);
 * // blocks.length === Math.floor(prompt.length / card.kvBlockSize)
 * ```
 */
export function computeBlockHashes(tokens: ArrayLike<number>, blockSize: number): KvStoredBlock[] {
  checkBlockSize(blockSize);
  const count = Math.floor(tokens.length / blockSize);
  const blocks: KvStoredBlock[] = [];
  // One buffer reused for every block: the parent slot, then the block's tokens.
  const bytes = new Uint8Array(U64_BYTES + blockSize * U32_BYTES);
  const view = new DataView(bytes.buffer);
  const tokenBytes = bytes.subarray(U64_BYTES);
  let parent = 0n;
  for (let b = 0; b < count; b++) {
    writeTokens(view, U64_BYTES, tokens, b * blockSize, (b + 1) * blockSize);
    const local = xxh3.xxh64(tokenBytes, BLOCK_HASH_SEED);
    let sequence = local;
    if (b > 0) {
      view.setBigUint64(0, parent, true);
      sequence = xxh3.xxh64(bytes, BLOCK_HASH_SEED);
    }
    blocks.push({ blockHash: toHex(sequence), tokensHash: toHex(local) });
    parent = sequence;
  }
  return blocks;
}
