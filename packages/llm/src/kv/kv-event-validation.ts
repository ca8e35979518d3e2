import type { KvCacheEvent } from "./kv-events.js";

/**
 * Most blocks one event may carry. A 1M-token prompt at 16 tokens a block
 * is 65 536 blocks; an event past this is not from an engine, and applying
 * it would let one message grow the index by as much.
 */
export const MAX_BLOCKS_PER_KV_EVENT = 1 << 16;

/** Worker ids are instance ids (16 hex digits); this leaves room for other engines' ids, not for a megabyte. */
const MAX_WORKER_ID_LENGTH = 256;
const BLOCK_HASH = /^[0-9a-f]{1,16}$/;

function isBlockHash(value: unknown): value is string {
  return typeof value === "string" && BLOCK_HASH.test(value);
}

/**
 * Why `value` is not a {@link KvCacheEvent} a router can apply, or undefined
 * when it is one. Events arrive from the event plane, where anything can be
 * published on the subject: every field the indexer reads is checked (not
 * `tokensHash`, which it never reads), hashes
 * must be block hashes as `block-hash.ts` writes them, and event ids must be
 * safe integers (one past 2^53 could never be followed by a next one).
 */
export function kvEventProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object";
  const event = value as Partial<Record<keyof KvCacheEvent, unknown>>;
  if (typeof event.workerId !== "string" || event.workerId.length === 0) return "workerId";
  if (event.workerId.length > MAX_WORKER_ID_LENGTH) return "workerId too long";
  if (!Number.isSafeInteger(event.eventId) || (event.eventId as number) < 0) return "eventId";
  const data = event.data as Partial<Record<string, unknown>> | undefined;
  if (typeof data !== "object" || data === null) return "data";
  switch (data.type) {
    case "stored": {
      if (data.parentHash !== null && !isBlockHash(data.parentHash)) return "parentHash";
      const blocks = data.blocks;
      if (!Array.isArray(blocks)) return "blocks";
      if (blocks.length > MAX_BLOCKS_PER_KV_EVENT) return "too many blocks";
      for (let i = 0; i < blocks.length; i++) {
        const block = blocks[i] as Partial<Record<string, unknown>> | null;
        if (typeof block !== "object" || block === null || !isBlockHash(block.blockHash)) return "blocks[].blockHash";
      }
      return undefined;
    }
    case "removed": {
      const hashes = data.blockHashes;
      if (!Array.isArray(hashes)) return "blockHashes";
      if (hashes.length > MAX_BLOCKS_PER_KV_EVENT) return "too many blockHashes";
      for (let i = 0; i < hashes.length; i++) if (!isBlockHash(hashes[i])) return "blockHashes[]";
      return undefined;
    }
    case "cleared":
      return undefined;
    default:
      return "data.type";
  }
}
