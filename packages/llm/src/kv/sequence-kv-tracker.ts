import { TdistError } from "@tdist/runtime";
import { chainBlockHash, computeBlockHashes } from "./block-hash.js";
import type { KvCacheEventData, KvStoredBlock } from "./kv-events.js";
import { type HeldBlock, resyncEvents } from "./kv-resync.js";

interface TrackedSequence {
  /** Tokens whose KV the sequence holds. */
  tokens: number[];
  /** Chained hashes of its full blocks. */
  blocks: KvStoredBlock[];
}

/**
 * Turns what each sequence of an engine holds into KV events, for engines
 * that keep one token history per sequence instead of a paged, hashed block
 * pool (llama.cpp: each sequence's KV cache is the prefix of its last
 * conversation). The engine reports a sequence's contents as "the first
 * `keep` tokens stay, then these were appended"; the tracker hashes the full
 * blocks (the router's hashing: xxh3-64, chained per block), counts how many
 * sequences hold each block, and returns the events that move the router's
 * view from before to after: `removed` for blocks no sequence holds any
 * more, `stored` (one event per run of new blocks, with its parent) for
 * blocks no sequence held before. A worker holding a block holds its
 * parent, as the router's index expects: sequences hold whole prefixes.
 *
 * ```ts
 * const tracker = new SequenceKvTracker(16);
 * tracker.update(0, 0, prompt);               // [{ type: "stored", parentHash: null, blocks: [...] }]
 * tracker.update(0, 20, otherPromptTail);     // removed blocks past token 16, stored the new ones
 * ```
 */
export class SequenceKvTracker {
  readonly blockSize: number;
  readonly #sequences = new Map<number, TrackedSequence>();
  /** block hash -> sequences holding it. */
  readonly #holders = new Map<string, number>();

  constructor(blockSize: number) {
    if (!Number.isInteger(blockSize) || blockSize < 1) {
      throw new TdistError("invalid_option", `blockSize must be a positive integer, got ${String(blockSize)}`);
    }
    this.blockSize = blockSize;
  }

  /** Distinct blocks held by at least one sequence. */
  get heldBlocks(): number {
    return this.#holders.size;
  }

  /** Tokens a sequence holds, as last reported. */
  tokens(sequence: number): readonly number[] {
    return this.#sequences.get(sequence)?.tokens ?? [];
  }

  /**
   * Sequence `sequence` now holds its first `keep` tokens (as last reported)
   * followed by `append`. Returns the events for the change (none when the
   * set of held full blocks is the same).
   */
  update(sequence: number, keep: number, append: readonly number[]): KvCacheEventData[] {
    const tracked = this.#sequences.get(sequence) ?? { tokens: [], blocks: [] };
    if (!Number.isInteger(keep) || keep < 0 || keep > tracked.tokens.length) {
      throw new TdistError(
        "bad_request",
        `sequence ${sequence} holds ${tracked.tokens.length} tokens; cannot keep ${String(keep)}`,
      );
    }
    const tokens = tracked.tokens.slice(0, keep);
    for (const token of append) tokens.push(token);
    const keptBlocks = Math.min(Math.floor(keep / this.blockSize), tracked.blocks.length);
    const blocks = tracked.blocks.slice(0, keptBlocks);
    const full = Math.floor(tokens.length / this.blockSize);
    if (keptBlocks === 0 && full > 0) {
      blocks.push(...computeBlockHashes(tokens, this.blockSize));
    } else {
      for (let b = keptBlocks; b < full; b++) {
        const parent = (blocks[b - 1] as KvStoredBlock).blockHash;
        blocks.push(chainBlockHash(parent, tokens.slice(b * this.blockSize, (b + 1) * this.blockSize)));
      }
    }
    // Net change: a block both dropped and re-added (the same tokens after `keep`) stays as it was.
    const wasHeld = blocks.map((block, b) => b >= keptBlocks && this.#holders.has(block.blockHash));
    for (let b = keptBlocks; b < blocks.length; b++) {
      const hash = (blocks[b] as KvStoredBlock).blockHash;
      this.#holders.set(hash, (this.#holders.get(hash) ?? 0) + 1);
    }
    const removed: string[] = [];
    for (let b = keptBlocks; b < tracked.blocks.length; b++) {
      const hash = (tracked.blocks[b] as KvStoredBlock).blockHash;
      const holders = (this.#holders.get(hash) ?? 1) - 1;
      if (holders > 0) {
        this.#holders.set(hash, holders);
      } else {
        this.#holders.delete(hash);
        removed.push(hash);
      }
    }
    const events: KvCacheEventData[] = [];
    if (removed.length > 0) events.push({ type: "removed", blockHashes: removed });
    // New blocks in runs: a run starts after a block the worker holds (or at the root).
    let run: KvStoredBlock[] = [];
    let runParent: string | null = null;
    for (let b = keptBlocks; b < blocks.length; b++) {
      const block = blocks[b] as KvStoredBlock;
      if (!wasHeld[b]) {
        if (run.length === 0) runParent = b === 0 ? null : (blocks[b - 1] as KvStoredBlock).blockHash;
        run.push(block);
      } else if (run.length > 0) {
        events.push({ type: "stored", parentHash: runParent, blocks: run });
        run = [];
      }
    }
    if (run.length > 0) events.push({ type: "stored", parentHash: runParent, blocks: run });
    if (tokens.length === 0) this.#sequences.delete(sequence);
    else this.#sequences.set(sequence, { tokens, blocks });
    return events;
  }

  /** `cleared`, then `stored` events for every block some sequence holds: a router's view rebuilt from nothing. */
  resyncEvents(): KvCacheEventData[] {
    const held: HeldBlock[] = [];
    const seen = new Set<string>();
    for (const { blocks } of this.#sequences.values()) {
      blocks.forEach((block, b) => {
        if (seen.has(block.blockHash)) return;
        seen.add(block.blockHash);
        held.push({ parentHash: b === 0 ? null : (blocks[b - 1] as KvStoredBlock).blockHash, block });
      });
    }
    return resyncEvents(held);
  }

  /** Every sequence lost its cache (the engine restarted): forget them all; returns `cleared`. */
  clear(): KvCacheEventData[] {
    this.#sequences.clear();
    this.#holders.clear();
    return [{ type: "cleared" }];
  }
}
