import { computeBlockHashes } from "@tdist/llm";
import { TdistError } from "@tdist/runtime";

const FORMAT = "tdist-mocker-kv/1";

/**
 * What a mocker prefill worker sends in place of a real KV cache: enough to
 * tell that the cache is the one of the decode request's prompt (its length,
 * a hash of every token id, and the chained hashes of its full blocks), so
 * the transfer seam carries real bytes and a mix-up is caught on arrival.
 */
export interface MockerKvPayload {
  format: typeof FORMAT;
  tokens: number;
  blockSize: number;
  /** FNV-1a over the token ids, 8 hex digits. */
  tokensHash: string;
  blockHashes: string[];
}

function tokensHash(tokens: readonly number[]): string {
  let hash = 0x811c9dc5;
  for (const token of tokens) hash = Math.imul(hash ^ (token >>> 0), 0x01000193) >>> 0;
  return hash.toString(16).padStart(8, "0");
}

export function describeKvPayload(tokens: readonly number[], blockSize: number): MockerKvPayload {
  return {
    format: FORMAT,
    tokens: tokens.length,
    blockSize,
    tokensHash: tokensHash(tokens),
    blockHashes: computeBlockHashes(tokens, blockSize).map((block) => block.blockHash),
  };
}

export function encodeKvPayload(tokens: readonly number[], blockSize: number): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(describeKvPayload(tokens, blockSize)));
}

/**
 * Checks that `bytes` is the payload of exactly `tokens`; throws
 * `kv_transfer_checksum` (the bytes arrived intact but are not this
 * prompt's cache, which the receiver treats like corrupt bytes: it
 * prefills locally).
 */
export function verifyKvPayload(bytes: Uint8Array, tokens: readonly number[]): void {
  let received: Partial<MockerKvPayload>;
  try {
    received = JSON.parse(new TextDecoder().decode(bytes)) as Partial<MockerKvPayload>;
  } catch (err) {
    throw new TdistError("kv_transfer_checksum", "the transferred KV payload is not a mocker KV payload", {
      cause: err,
    });
  }
  // Hashed at the sender's block size: the check is of the tokens, whatever the receiver's blocks.
  const blockSize = received.blockSize;
  if (!Number.isInteger(blockSize) || (blockSize as number) < 1) {
    throw new TdistError("kv_transfer_checksum", "the transferred KV payload has no valid block size");
  }
  const expected = describeKvPayload(tokens, blockSize as number);
  const matches =
    received.format === expected.format &&
    received.tokens === expected.tokens &&
    received.blockSize === expected.blockSize &&
    received.tokensHash === expected.tokensHash &&
    Array.isArray(received.blockHashes) &&
    received.blockHashes.length === expected.blockHashes.length &&
    received.blockHashes.every((hash, i) => hash === expected.blockHashes[i]);
  if (!matches) {
    throw new TdistError(
      "kv_transfer_checksum",
      `the transferred KV cache is not the one of this prompt's first ${tokens.length} tokens`,
    );
  }
}
