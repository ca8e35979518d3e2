import { type HeldBlock, type KvCacheEventData, type KvStoredBlock, resyncEvents } from "@tdist/llm";

/** One physical KV block. */
export interface KvBlock {
  readonly id: number;
  /** Sequences using the block. */
  refCount: number;
  /** Set once the block is full, computed and registered in the prefix cache. */
  hash: string | null;
  /** With `hash`: the registered block's own tokens hash and the hash of the block before it. */
  tokensHash: string | null;
  parentHash: string | null;
}

/**
 * A paged KV cache with prefix caching, as in vLLM:
 *
 * - sequences own blocks through reference counts; identical prefixes share
 *   blocks (looked up by chained block hash);
 * - a full computed block is registered under its hash (`stored` event); when
 *   no sequence uses it any more it stays cached but becomes evictable;
 * - allocation takes never-used blocks first, then evicts cached blocks least
 *   recently freed first (`removed` event).
 *
 * Events are queued in order; the engine drains them with {@link takeEvents}
 * and numbers them. One hash maps to at most one block, so every `removed`
 * exactly cancels one `stored`.
 */
export class KvBlockPool {
  private readonly blocks: KvBlock[];
  /** Blocks never registered (or whose registration was dropped), as a stack. */
  private readonly uncached: number[] = [];
  /** Registered blocks nobody uses, least recently freed first (Map keeps insertion order). */
  private readonly evictable = new Map<number, KvBlock>();
  private readonly byHash = new Map<string, KvBlock>();
  private events: KvCacheEventData[] = [];

  constructor(readonly totalBlocks: number) {
    this.blocks = Array.from({ length: totalBlocks }, (_, id) => ({
      id,
      refCount: 0,
      hash: null,
      tokensHash: null,
      parentHash: null,
    }));
    for (let id = totalBlocks - 1; id >= 0; id--) this.uncached.push(id);
  }

  /** Blocks an allocation can get now (never-used plus evictable cached ones). */
  get allocatableBlocks(): number {
    return this.uncached.length + this.evictable.size;
  }

  /** Blocks in use by at least one sequence. */
  get activeBlocks(): number {
    return this.totalBlocks - this.allocatableBlocks;
  }

  /** Blocks registered in the prefix cache (in use or evictable). */
  get cachedBlocks(): number {
    return this.byHash.size;
  }

  /** How many leading `hashes` are in the cache. */
  matchPrefix(hashes: readonly string[], limit = hashes.length): number {
    let hits = 0;
    while (hits < limit && this.byHash.has(hashes[hits] as string)) hits++;
    return hits;
  }

  /**
   * Whether taking the cached blocks for `hitHashes` and then `newBlocks`
   * fresh ones would succeed (hits that are evictable stop being allocatable).
   */
  canAcquire(hitHashes: readonly string[], newBlocks: number): boolean {
    let evictableHits = 0;
    for (const hash of hitHashes) {
      const block = this.byHash.get(hash);
      if (block !== undefined && block.refCount === 0) evictableHits++;
    }
    return this.allocatableBlocks - evictableHits >= newBlocks;
  }

  /** Takes a reference on the cached blocks of `hashes` (all must be cached). */
  acquireCached(hashes: readonly string[]): KvBlock[] {
    return hashes.map((hash) => {
      const block = this.byHash.get(hash);
      if (block === undefined) throw new Error(`block ${hash} is not cached`);
      if (block.refCount === 0) this.evictable.delete(block.id);
      block.refCount++;
      return block;
    });
  }

  /** Allocates `count` fresh blocks, evicting cached ones as needed; null (and no change) when too few. */
  allocate(count: number): KvBlock[] | null {
    if (count > this.allocatableBlocks) return null;
    const out: KvBlock[] = [];
    const removed: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.uncached.pop();
      let block: KvBlock;
      if (id !== undefined) {
        block = this.blocks[id] as KvBlock;
      } else {
        const [victimId, victim] = this.evictable.entries().next().value as [number, KvBlock];
        this.evictable.delete(victimId);
        this.byHash.delete(victim.hash as string);
        removed.push(victim.hash as string);
        victim.hash = null;
        victim.tokensHash = null;
        victim.parentHash = null;
        block = victim;
      }
      block.refCount = 1;
      out.push(block);
    }
    if (removed.length > 0) this.events.push({ type: "removed", blockHashes: removed });
    return out;
  }

  /**
   * Drops one reference on each block. Pass a sequence's blocks in order:
   * they are freed tail first, so the tail is evicted before the shared
   * prefix it hangs off.
   */
  release(blocks: readonly KvBlock[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      const block = blocks[i] as KvBlock;
      if (block.refCount <= 0) throw new Error(`block ${block.id} released more often than acquired`);
      block.refCount--;
      if (block.refCount > 0) continue;
      if (block.hash === null) this.uncached.push(block.id);
      else this.evictable.set(block.id, block);
    }
  }

  /**
   * Registers newly computed full blocks of one sequence, in order.
   * `parentHash` is the chained hash of the block before `entries[0]` (null
   * at the start of the sequence). Blocks whose hash is already cached by
   * another block stay unregistered (they are plain private blocks); each run
   * of newly registered blocks becomes one `stored` event.
   */
  commit(parentHash: string | null, entries: readonly { block: KvBlock; hashes: KvStoredBlock }[]): void {
    let run: KvStoredBlock[] = [];
    let runParent = parentHash;
    let previous = parentHash;
    const flush = (): void => {
      if (run.length > 0) this.events.push({ type: "stored", parentHash: runParent, blocks: run });
      run = [];
    };
    for (const { block, hashes } of entries) {
      if (block.hash === null && !this.byHash.has(hashes.blockHash)) {
        if (run.length === 0) runParent = previous;
        block.hash = hashes.blockHash;
        block.tokensHash = hashes.tokensHash;
        block.parentHash = previous;
        this.byHash.set(hashes.blockHash, block);
        run.push(hashes);
      } else {
        flush();
      }
      previous = hashes.blockHash;
    }
    flush();
  }

  /**
   * The events that rebuild a router's view of this cache from nothing
   * (`cleared`, then every registered block, parents first). Events queued
   * and not yet taken are dropped: the state they lead to is the one sent.
   */
  resyncEvents(): KvCacheEventData[] {
    this.events = [];
    const held: HeldBlock[] = [];
    for (const block of this.byHash.values()) {
      held.push({
        parentHash: block.parentHash,
        block: { blockHash: block.hash as string, tokensHash: block.tokensHash as string },
      });
    }
    return resyncEvents(held);
  }

  /** Events queued since the last call, oldest first. */
  takeEvents(): KvCacheEventData[] {
    const events = this.events;
    this.events = [];
    return events;
  }
}
