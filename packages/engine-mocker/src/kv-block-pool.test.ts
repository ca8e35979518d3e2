import { computeBlockHashes, KvIndexer } from "@tdist/llm";
import { describe, expect, it } from "vitest";
import { KvBlockPool } from "./kv-block-pool.js";

const hashesOf = (tokens: number[]) => computeBlockHashes(tokens, 2);

describe("kv block pool", () => {
  it("kv block pool - allocates fresh blocks and refuses when full", () => {
    const pool = new KvBlockPool(3);
    const a = pool.allocate(2);
    expect(a).toHaveLength(2);
    expect(pool.activeBlocks).toBe(2);
    expect(pool.allocate(2)).toBeNull();
    expect(pool.activeBlocks).toBe(2);
    pool.release(a ?? []);
    expect(pool.allocatableBlocks).toBe(3);
    expect(pool.takeEvents()).toEqual([]);
  });

  it("kv block pool - commit registers blocks and emits one stored event per run", () => {
    const pool = new KvBlockPool(4);
    const blocks = pool.allocate(3) ?? [];
    const hashes = hashesOf([1, 2, 3, 4, 5, 6]);
    pool.commit(
      null,
      blocks.map((block, i) => ({ block, hashes: hashes[i] as (typeof hashes)[number] })),
    );
    expect(pool.takeEvents()).toEqual([{ type: "stored", parentHash: null, blocks: hashes }]);
    expect(pool.cachedBlocks).toBe(3);
    expect(pool.matchPrefix(hashes.map((h) => h.blockHash))).toBe(3);
  });

  it("kv block pool - a duplicate hash stays private and splits the stored runs", () => {
    const pool = new KvBlockPool(8);
    const hashes = hashesOf([1, 2, 3, 4, 5, 6]);
    const first = pool.allocate(1) ?? [];
    pool.commit(hashes[0]?.blockHash ?? null, [{ block: first[0] as never, hashes: hashes[1] as never }]);
    pool.takeEvents();
    const second = pool.allocate(3) ?? [];
    pool.commit(
      null,
      second.map((block, i) => ({ block, hashes: hashes[i] as never })),
    );
    expect(pool.takeEvents()).toEqual([
      { type: "stored", parentHash: null, blocks: [hashes[0]] },
      { type: "stored", parentHash: hashes[1]?.blockHash, blocks: [hashes[2]] },
    ]);
    expect(second[1]?.hash).toBeNull();
  });

  it("kv block pool - evicts least recently freed first, tail before prefix", () => {
    const pool = new KvBlockPool(4);
    const a = pool.allocate(2) ?? [];
    const ha = hashesOf([1, 1, 2, 2]);
    pool.commit(
      null,
      a.map((block, i) => ({ block, hashes: ha[i] as never })),
    );
    const b = pool.allocate(2) ?? [];
    const hb = hashesOf([3, 3, 4, 4]);
    pool.commit(
      null,
      b.map((block, i) => ({ block, hashes: hb[i] as never })),
    );
    pool.takeEvents();
    pool.release(a);
    pool.release(b);
    // Touch a's prefix again so that it becomes most recently used.
    const hit = pool.acquireCached([ha[0]?.blockHash as string]);
    pool.release(hit);
    expect(pool.allocate(2)).toHaveLength(2);
    expect(pool.takeEvents()).toEqual([{ type: "removed", blockHashes: [ha[1]?.blockHash, hb[1]?.blockHash] }]);
    expect(pool.matchPrefix(ha.map((h) => h.blockHash))).toBe(1);
    expect(pool.cachedBlocks).toBe(2);
  });

  it("kv block pool - canAcquire counts evictable hits as taken", () => {
    const pool = new KvBlockPool(2);
    const a = pool.allocate(2) ?? [];
    const ha = hashesOf([1, 1, 2, 2]);
    pool.commit(
      null,
      a.map((block, i) => ({ block, hashes: ha[i] as never })),
    );
    pool.release(a);
    expect(pool.canAcquire([ha[0]?.blockHash as string], 1)).toBe(true);
    expect(pool.canAcquire([ha[0]?.blockHash as string], 2)).toBe(false);
    expect(pool.canAcquire([], 2)).toBe(true);
  });

  it("kv block pool - resync events re-send every registered block and drop what was queued", () => {
    const pool = new KvBlockPool(8);
    const a = hashesOf([1, 2, 3, 4, 5, 6]);
    const b = hashesOf([1, 2, 3, 4, 9, 9]);
    const blocksA = pool.allocate(3) ?? [];
    pool.commit(
      null,
      blocksA.map((block, i) => ({ block, hashes: a[i] as (typeof a)[number] })),
    );
    const blocksB = pool.allocate(1) ?? [];
    pool.commit(a[1]?.blockHash ?? null, [{ block: blocksB[0] as never, hashes: b[2] as never }]);
    const events = pool.resyncEvents();
    expect(pool.takeEvents()).toEqual([]);
    expect(events[0]).toEqual({ type: "cleared" });
    const indexer = new KvIndexer({ blockSize: 2 });
    events.forEach((data, i) => {
      indexer.applyEvent({ workerId: "w", eventId: i, data });
    });
    expect(indexer.findMatches([1, 2, 3, 4, 5, 6]).scores.get("w")).toBe(3);
    expect(indexer.findMatches([1, 2, 3, 4, 9, 9]).scores.get("w")).toBe(3);
    expect(indexer.stats().blocks).toBe(pool.cachedBlocks);
  });
});
