import { TdistError } from "@tdist/runtime";
import { BinaryHeap } from "./binary-heap.js";
import { BlockHashIndex } from "./block-hash-index.js";
import { MemberArena } from "./member-arena.js";

/**
 * Nodes live in parallel typed arrays indexed by a node number (structure
 * of arrays), not as one object each: the tree holds one node per cached
 * block — millions in a large deployment — and a node object per block made
 * the garbage collector the indexer's main cost. Node 0 is the sentinel
 * root (the parent of every first block). Children form a doubly linked
 * sibling list. A node's first worker is stored inline; further workers sit
 * in one chunk of a shared {@link MemberArena} per node, with a position map
 * once a block is held by more than LOOKUP_THRESHOLD.
 */
const NONE = -1;
const ROOT = 0;
const LOOKUP_THRESHOLD = 16;
const INITIAL_NODES = 1024;
/** A node's first chunk of extra members holds 2^1 of them. */
const FIRST_CHUNK_LOG2 = 1;

/**
 * One worker's memberships in touch order, kept when ages matter (a TTL or
 * a per-worker bound). An entry is live while its node still holds the
 * worker under the entry's stamp; removals and re-touches leave dead entries
 * behind, which compaction drops. Stamps grow with time, so the oldest
 * memberships of a worker are always at the head.
 */
interface WorkerLog {
  readonly index: number;
  readonly id: string;
  /** Live memberships. */
  blocks: number;
  nodes: number[];
  stamps: number[];
  /** Touch times, only with a TTL. */
  times: number[];
  head: number;
  /**
   * The node of the last block stored for this worker: an engine stores its
   * decode blocks one event at a time, each the child of the one before, so
   * the next event's parent is usually this one and needs no map probe.
   */
  last: number;
}

export interface RadixTreeOptions {
  /**
   * Memberships older than this (ms since they were last stored or touched)
   * are dropped. Default: never (events mode relies on `removed` events).
   */
  ttlMs?: number;
  /**
   * Most memberships (worker x block pairs) held; past it the tree is pruned
   * down to `maxBlocks * pruneTargetRatio`: the least recently touched
   * memberships go first when ages are tracked (a TTL or a per-worker bound
   * is set), else the least recently created blocks with everything below
   * them. Default 4 194 304 (2^22).
   */
  maxBlocks?: number;
  /** Where pruning by size stops, as a fraction of `maxBlocks`. Default 0.8. */
  pruneTargetRatio?: number;
  /**
   * Most memberships one worker may hold; past it that worker's least
   * recently stored go first (a per-worker LRU, as llm-d's prefix index).
   * Default: no per-worker bound.
   */
  maxBlocksPerWorker?: number;
}

/** Counters of what the tree did, for metrics, tests and the benchmark. */
export interface RadixTreeStats {
  /** Distinct blocks (nodes). */
  nodes: number;
  /** Memberships: (worker, block) pairs. */
  blocks: number;
  workers: number;
  /** Stored runs whose parent the worker does not hold: dropped (unreachable for prefix matching). */
  orphanStores: number;
  /** Stored blocks whose hash already names a block under another parent: dropped. */
  conflicts: number;
  /** Memberships dropped by TTL or size pruning. */
  prunedBlocks: number;
}

/** A serialisable copy of a tree; `ages` are ms before `takenAtMs` (parents come before children). */
export interface RadixTreeSnapshot {
  version: 1;
  takenAtMs: number;
  workers: string[];
  nodes: { hash: string; parent: number; workers: number[]; ages: number[] }[];
}

export const DEFAULT_MAX_BLOCKS = 1 << 22;
export const DEFAULT_PRUNE_TARGET_RATIO = 0.8;

function checkPositive(option: string, value: number | undefined, integer: boolean): void {
  if (value === undefined) return;
  if (typeof value !== "number" || !(value > 0) || (integer && !Number.isInteger(value)) || !Number.isFinite(value)) {
    throw new TdistError(
      "invalid_option",
      `${option} must be a positive ${integer ? "integer" : "number"}, got ${String(value)}`,
    );
  }
}

/**
 * The KV router's index: a radix tree over chained block hashes, each node
 * knowing which workers hold its block. Because hash `i` names the whole
 * prefix `0..i`, every node is also reachable directly through one map, so
 * matching a prompt is one lookup per block (a pointer step where a block
 * has a single child). The map is a {@link BlockHashIndex}.
 *
 * Invariant: a worker that holds a block holds its parent. Engines cache
 * prefixes that way (a block is only reachable by prefix matching through
 * its parent), so the tree keeps it so: a stored run whose parent the worker
 * does not hold is dropped as unreachable, and removing a block from a worker
 * removes its descendants from that worker too. The invariant is what makes
 * `findMatches` cost one lookup per block plus one visit per worker whose
 * match ends at a given depth, instead of one set intersection per block.
 *
 * ```ts
 * const tree = new RadixTree();
 * tree.store("w1", null, ["a1", "b2"], now);
 * tree.findMatches(["a1", "b2", "c3"]).get("w1"); // 2
 * ```
 */
export class RadixTree {
  /** node number -> block hash (grown in place: the index reads it). */
  private readonly hashes: (string | undefined)[] = [""];
  /** block hash -> node number. */
  private readonly byHash = new BlockHashIndex(this.hashes);
  private parents = new Int32Array(INITIAL_NODES);
  private firstChildren = new Int32Array(INITIAL_NODES);
  private nextSiblings = new Int32Array(INITIAL_NODES);
  private prevSiblings = new Int32Array(INITIAL_NODES);
  private counts = new Int32Array(INITIAL_NODES);
  private workers0 = new Int32Array(INITIAL_NODES);
  /** The first member's stamp, only when ages are tracked (empty otherwise, as the arena's stamps). */
  private stamps0: Float64Array;
  /** Extra members: chunk offset in `arena` per node (NONE: none) and the chunk's size as a power of two. */
  private moreAt = new Int32Array(INITIAL_NODES);
  private moreLog2 = new Uint8Array(INITIAL_NODES);
  private readonly arena: MemberArena;
  private lookups: (Map<number, number> | undefined)[] = [undefined];
  private freeNodes: number[] = [];
  private nodeCount = 1;
  private readonly workerIndex = new Map<string, WorkerLog>();
  private readonly workerByIndex: (WorkerLog | undefined)[] = [];
  /** Per-worker touch logs are kept (for a TTL or a per-worker bound). */
  private readonly trackAges: boolean;
  private stamp = 0;
  private memberships = 0;
  private orphans = 0;
  private conflictCount = 0;
  private pruned = 0;
  private lastExpiry = Number.NEGATIVE_INFINITY;
  private chain = new Int32Array(256);
  private readonly scratchVisited: number[] = [];
  private readonly scratchStack: number[] = [];
  readonly ttlMs: number | undefined;
  readonly maxBlocks: number;
  readonly pruneTargetRatio: number;
  readonly maxBlocksPerWorker: number | undefined;

  constructor(options: RadixTreeOptions = {}) {
    checkPositive("ttlMs", options.ttlMs, false);
    checkPositive("maxBlocks", options.maxBlocks, true);
    checkPositive("pruneTargetRatio", options.pruneTargetRatio, false);
    checkPositive("maxBlocksPerWorker", options.maxBlocksPerWorker, true);
    if (options.pruneTargetRatio !== undefined && options.pruneTargetRatio >= 1) {
      throw new TdistError("invalid_option", `pruneTargetRatio must be < 1, got ${options.pruneTargetRatio}`);
    }
    this.ttlMs = options.ttlMs;
    this.maxBlocks = options.maxBlocks ?? DEFAULT_MAX_BLOCKS;
    this.pruneTargetRatio = options.pruneTargetRatio ?? DEFAULT_PRUNE_TARGET_RATIO;
    this.maxBlocksPerWorker = options.maxBlocksPerWorker;
    this.trackAges = this.ttlMs !== undefined || this.maxBlocksPerWorker !== undefined;
    // Stamps order a worker's memberships by age; without ages nothing reads them.
    this.stamps0 = new Float64Array(this.trackAges ? INITIAL_NODES : 0);
    this.arena = new MemberArena(this.trackAges);
    this.parents[ROOT] = NONE;
    this.firstChildren[ROOT] = NONE;
    this.nextSiblings[ROOT] = NONE;
    this.prevSiblings[ROOT] = NONE;
    this.moreAt[ROOT] = NONE;
  }

  stats(): RadixTreeStats {
    return {
      nodes: this.byHash.size,
      blocks: this.memberships,
      workers: this.workerIndex.size,
      orphanStores: this.orphans,
      conflicts: this.conflictCount,
      prunedBlocks: this.pruned,
    };
  }

  /** Worker ids that hold at least one block or were stored to, in first-seen order. */
  workerIds(): string[] {
    return [...this.workerIndex.keys()];
  }

  /** Blocks a worker holds in the tree (SGLang's "tree size" per worker). */
  blockCount(workerId: string): number {
    return this.workerIndex.get(workerId)?.blocks ?? 0;
  }

  /**
   * Records that `workerId` holds `blocks` (hashes, or stored blocks of a
   * KV event), a chain hanging off `parentHash` (null: the chain starts the
   * sequence). `now` (ms) matters only with a TTL. Returns the number of
   * blocks recorded: 0 when the worker does not hold `parentHash` (the run is
   * unreachable for prefix matching) and fewer when a hash already names a
   * block under another parent (a hash conflict: the rest is dropped).
   */
  store(
    workerId: string,
    parentHash: string | null,
    blocks: readonly string[] | readonly { blockHash: string }[],
    now = 0,
  ): number {
    const worker = this.worker(workerId);
    const w = worker.index;
    let parent = ROOT;
    if (parentHash !== null) {
      // A freed node's hash is cleared, so a matching hash is the live node for it.
      const last = worker.last;
      const found = last !== NONE && this.hashes[last] === parentHash ? last : this.byHash.get(parentHash);
      if (found === undefined || this.slotOf(found, w) < 0) {
        if (blocks.length > 0) this.orphans++;
        return 0;
      }
      parent = found;
    }
    let recorded = 0;
    for (let i = 0; i < blocks.length; i++) {
      const block = blocks[i] as string | { blockHash: string };
      const hash = typeof block === "string" ? block : block.blockHash;
      // A run re-stored along an existing chain (another worker caching the same prefix) is
      // followed through the parent's newest child, as findMatches does, without a map probe.
      let node = this.firstChildren[parent] as number;
      if (node !== NONE && this.hashes[node] === hash) {
        this.touch(worker, node, now);
        parent = node;
        recorded++;
        continue;
      }
      // One probe finds the block or the slot a new one goes in.
      const fingerprint = BlockHashIndex.fingerprint(hash);
      const slot = this.byHash.slotFor(hash, fingerprint);
      node = this.byHash.nodeAt(slot);
      if (node === NONE) {
        node = this.createNode(hash, parent);
        this.byHash.insertAt(slot, fingerprint, node);
      } else if (this.parents[node] !== parent) {
        this.conflictCount++;
        break;
      }
      this.touch(worker, node, now);
      parent = node;
      recorded++;
    }
    if (recorded > 0) worker.last = parent;
    const cap = this.maxBlocksPerWorker;
    if (cap !== undefined && worker.blocks > cap) {
      let removed = 0;
      while (worker.blocks > cap && worker.head < worker.nodes.length) removed += this.dropHead(worker);
      this.compactLog(worker);
      this.pruned += removed;
    }
    if (this.memberships > this.maxBlocks) this.pruneToSize();
    return recorded;
  }

  /** Drops `blockHashes` (and, by the invariant, their descendants) from one worker; unknown hashes are ignored. */
  remove(workerId: string, blockHashes: readonly string[]): number {
    const worker = this.workerIndex.get(workerId);
    if (worker === undefined) return 0;
    let removed = 0;
    for (let i = 0; i < blockHashes.length; i++) {
      const node = this.byHash.get(blockHashes[i] as string);
      if (node !== undefined && this.slotOf(node, worker.index) >= 0) removed += this.removeSubtree(worker, node);
    }
    return removed;
  }

  /** Drops every block of one worker but remembers the worker. */
  clearWorker(workerId: string): number {
    const worker = this.workerIndex.get(workerId);
    if (worker === undefined) return 0;
    let removed = 0;
    const firsts: number[] = [];
    for (let child = this.firstChildren[ROOT] as number; child !== NONE; child = this.nextSiblings[child] as number) {
      if (this.slotOf(child, worker.index) >= 0) firsts.push(child);
    }
    for (const node of firsts) removed += this.removeSubtree(worker, node);
    worker.nodes = [];
    worker.stamps = [];
    worker.times = [];
    worker.head = 0;
    return removed;
  }

  /** Drops every block of one worker and forgets it. */
  removeWorker(workerId: string): number {
    const worker = this.workerIndex.get(workerId);
    if (worker === undefined) return 0;
    const removed = this.clearWorker(workerId);
    this.workerIndex.delete(workerId);
    this.workerByIndex[worker.index] = undefined;
    return removed;
  }

  /**
   * How many leading blocks of `blockHashes` each worker holds (workers
   * holding none are absent). Cost: one lookup per matched block plus, for
   * each depth where some workers' match ends, a pass over the workers
   * holding that block.
   */
  findMatches(blockHashes: readonly string[]): MatchScores {
    if (this.chain.length < blockHashes.length) this.chain = new Int32Array(blockHashes.length * 2);
    const chain = this.chain;
    let length = 0;
    let parent = ROOT;
    for (let i = 0; i < blockHashes.length; i++) {
      const hash = blockHashes[i] as string;
      // A block with one child (most of a long prompt) is followed without a map lookup.
      const only = this.firstChildren[parent] as number;
      let node: number | undefined;
      if (only !== NONE && this.nextSiblings[only] === NONE) node = this.hashes[only] === hash ? only : undefined;
      else {
        node = this.byHash.get(hash);
        if (node !== undefined && this.parents[node] !== parent) node = undefined;
      }
      if (node === undefined) break;
      chain[length++] = node;
      parent = node;
    }
    const depths = new Uint32Array(this.workerByIndex.length);
    const matched: number[] = [];
    const counts = this.counts;
    // Deepest first: by the invariant each node's workers include its child's,
    // so the workers a node adds over its child are exactly those whose match ends there.
    for (let depth = length - 1; depth >= 0; depth--) {
      const node = chain[depth] as number;
      if (counts[node] === matched.length) continue;
      const first = this.workers0[node] as number;
      if (depths[first] === 0) {
        depths[first] = depth + 1;
        matched.push(first);
      }
      const extras = (counts[node] as number) - 1;
      if (extras <= 0) continue;
      const members = this.arena.workers;
      const from = this.moreAt[node] as number;
      for (let i = from; i < from + extras; i++) {
        const w = members[i] as number;
        if (depths[w] === 0) {
          depths[w] = depth + 1;
          matched.push(w);
        }
      }
    }
    return new MatchScores(depths, matched, this.workerIndex, this.workerByIndex);
  }

  /** Drops memberships older than the TTL; cheap when called often (the oldest sit at each log's head). */
  expire(now: number): number {
    const ttl = this.ttlMs;
    if (ttl === undefined) return 0;
    this.lastExpiry = now;
    const cutoff = now - ttl;
    let removed = 0;
    for (const worker of this.workerIndex.values()) {
      while (worker.head < worker.nodes.length && (worker.times[worker.head] as number) < cutoff) {
        removed += this.dropHead(worker);
      }
      this.compactLog(worker);
    }
    this.pruned += removed;
    return removed;
  }

  /** Runs {@link expire} when a tenth of the TTL has passed since the last run. */
  maybeExpire(now: number): void {
    if (this.ttlMs !== undefined && now - this.lastExpiry >= this.ttlMs / 10) this.expire(now);
  }

  /** A copy of the contents; with a TTL, membership ages (relative to `now`) are kept. */
  snapshot(now: number): RadixTreeSnapshot {
    const workers: string[] = [];
    const snapshotIndex = new Map<number, number>();
    for (const worker of this.workerIndex.values()) {
      snapshotIndex.set(worker.index, workers.length);
      workers.push(worker.id);
    }
    const timeOf = new Map<number, number>();
    if (this.ttlMs !== undefined) {
      for (const worker of this.workerIndex.values()) {
        for (let i = worker.head; i < worker.nodes.length; i++) {
          timeOf.set(worker.stamps[i] as number, worker.times[i] as number);
        }
      }
    }
    const nodes: RadixTreeSnapshot["nodes"] = [];
    const position = new Map<number, number>();
    const queue: number[] = [];
    const pushChildren = (node: number): void => {
      for (let child = this.firstChildren[node] as number; child !== NONE; child = this.nextSiblings[child] as number) {
        queue.push(child);
      }
    };
    pushChildren(ROOT);
    for (let q = 0; q < queue.length; q++) {
      const node = queue[q] as number;
      position.set(node, nodes.length);
      const parent = this.parents[node] as number;
      const entry = {
        hash: this.hashes[node] as string,
        parent: parent === ROOT ? -1 : (position.get(parent) as number),
        workers: [] as number[],
        ages: [] as number[],
      };
      for (let slot = 0; slot < (this.counts[node] as number); slot++) {
        entry.workers.push(snapshotIndex.get(this.workerAt(node, slot)) as number);
        entry.ages.push(Math.max(0, now - (timeOf.get(this.stampAt(node, slot)) ?? now)));
      }
      nodes.push(entry);
      pushChildren(node);
    }
    return { version: 1, takenAtMs: now, workers, nodes };
  }

  /** Replaces the contents with a snapshot; membership ages carry over relative to `now`. */
  restore(snapshot: RadixTreeSnapshot, now: number): void {
    if (snapshot?.version !== 1 || !Array.isArray(snapshot.nodes) || !Array.isArray(snapshot.workers)) {
      throw new TdistError("bad_request", "not a radix tree snapshot (version 1)");
    }
    for (const id of this.workerIds()) this.removeWorker(id);
    const workers = snapshot.workers.map((id) => this.worker(id));
    const created: number[] = [];
    const touches: { worker: WorkerLog; node: number; time: number }[] = [];
    for (const entry of snapshot.nodes) {
      const parent = entry.parent < 0 ? ROOT : created[entry.parent];
      if (parent === undefined)
        throw new TdistError("bad_request", `snapshot node ${entry.hash} comes before its parent`);
      if (typeof entry.hash !== "string" || this.byHash.has(entry.hash)) {
        throw new TdistError("bad_request", `snapshot node ${String(entry.hash)} is invalid or repeated`);
      }
      const node = this.createNode(entry.hash, parent);
      this.byHash.set(entry.hash, node);
      created.push(node);
      entry.workers.forEach((w, i) => {
        const worker = workers[w];
        if (worker === undefined) throw new TdistError("bad_request", `snapshot names unknown worker index ${w}`);
        touches.push({ worker, node, time: now - (entry.ages[i] ?? 0) });
      });
    }
    // Oldest first, so each worker's log stays ordered by age.
    touches.sort((a, b) => a.time - b.time);
    for (const { worker, node, time } of touches) this.touch(worker, node, time);
    // Nodes nobody holds (a snapshot of a tree that broke the invariant) go, leaves first.
    for (let i = created.length - 1; i >= 0; i--) {
      const node = created[i] as number;
      if (this.counts[node] === 0 && this.firstChildren[node] === NONE) this.detach(node);
    }
    if (this.memberships > this.maxBlocks) this.pruneToSize();
  }

  // ---- nodes -------------------------------------------------------------------

  /** A new node under `parent`; the caller enters it in `byHash`. */
  private createNode(hash: string, parent: number): number {
    let node = this.freeNodes.pop();
    if (node === undefined) {
      node = this.nodeCount++;
      if (node >= this.parents.length) this.grow();
    }
    this.hashes[node] = hash;
    this.parents[node] = parent;
    this.firstChildren[node] = NONE;
    this.prevSiblings[node] = NONE;
    this.counts[node] = 0;
    this.workers0[node] = NONE;
    this.moreAt[node] = NONE;
    this.lookups[node] = undefined;
    const first = this.firstChildren[parent] as number;
    this.nextSiblings[node] = first;
    if (first !== NONE) this.prevSiblings[first] = node;
    this.firstChildren[parent] = node;
    return node;
  }

  private grow(): void {
    const size = this.parents.length * 2;
    const grown = <T extends Int32Array | Float64Array | Uint8Array>(array: T): T => {
      const next = new (array.constructor as new (n: number) => T)(size);
      next.set(array);
      return next;
    };
    this.parents = grown(this.parents);
    this.firstChildren = grown(this.firstChildren);
    this.nextSiblings = grown(this.nextSiblings);
    this.prevSiblings = grown(this.prevSiblings);
    this.counts = grown(this.counts);
    this.workers0 = grown(this.workers0);
    if (this.trackAges) this.stamps0 = grown(this.stamps0);
    this.moreAt = grown(this.moreAt);
    this.moreLog2 = grown(this.moreLog2);
  }

  /** Unlinks an empty, childless node and frees its number. */
  private detach(node: number): void {
    this.byHash.delete(this.hashes[node] as string);
    const parent = this.parents[node] as number;
    const prev = this.prevSiblings[node] as number;
    const next = this.nextSiblings[node] as number;
    if (prev !== NONE) this.nextSiblings[prev] = next;
    else if (this.firstChildren[parent] === node) this.firstChildren[parent] = next;
    if (next !== NONE) this.prevSiblings[next] = prev;
    this.hashes[node] = undefined;
    this.releaseMore(node);
    this.lookups[node] = undefined;
    this.counts[node] = 0;
    this.parents[node] = NONE;
    this.freeNodes.push(node);
  }

  // ---- memberships ---------------------------------------------------------------

  /** Member position of `worker` in `node`, or -1. */
  private slotOf(node: number, worker: number): number {
    const count = this.counts[node] as number;
    if (count === 0) return -1;
    if (this.workers0[node] === worker) return 0;
    const lookup = this.lookups[node];
    if (lookup !== undefined) return lookup.get(worker) ?? -1;
    if (count === 1) return -1;
    const members = this.arena.workers;
    const from = this.moreAt[node] as number;
    const end = from + count - 1;
    for (let i = from; i < end; i++) if (members[i] === worker) return i - from + 1;
    return -1;
  }

  private workerAt(node: number, slot: number): number {
    return slot === 0
      ? (this.workers0[node] as number)
      : (this.arena.workers[(this.moreAt[node] as number) + slot - 1] as number);
  }

  /** The stamp of a membership (0 when ages are not tracked). */
  private stampAt(node: number, slot: number): number {
    if (!this.trackAges) return 0;
    return slot === 0
      ? (this.stamps0[node] as number)
      : (this.arena.stamps[(this.moreAt[node] as number) + slot - 1] as number);
  }

  private setMember(node: number, slot: number, worker: number, stamp: number): void {
    if (slot === 0) {
      this.workers0[node] = worker;
      if (this.trackAges) this.stamps0[node] = stamp;
    } else {
      const at = (this.moreAt[node] as number) + slot - 1;
      this.arena.workers[at] = worker;
      if (this.trackAges) this.arena.stamps[at] = stamp;
    }
  }

  private addMember(node: number, worker: number, stamp: number): void {
    const count = this.counts[node] as number;
    if (count === 0) {
      this.workers0[node] = worker;
      if (this.trackAges) this.stamps0[node] = stamp;
      this.counts[node] = 1;
      return;
    }
    const extras = count - 1;
    const arena = this.arena;
    if (extras === 0) {
      this.moreAt[node] = arena.alloc(FIRST_CHUNK_LOG2);
      this.moreLog2[node] = FIRST_CHUNK_LOG2;
    } else if (extras === 1 << (this.moreLog2[node] as number)) {
      // Full: move to a chunk twice the size.
      const log2 = (this.moreLog2[node] as number) + 1;
      const from = this.moreAt[node] as number;
      const to = arena.alloc(log2);
      arena.move(from, to, extras);
      arena.release(from, log2 - 1);
      this.moreAt[node] = to;
      this.moreLog2[node] = log2;
    }
    const at = (this.moreAt[node] as number) + extras;
    arena.workers[at] = worker;
    if (this.trackAges) arena.stamps[at] = stamp;
    this.counts[node] = count + 1;
    const lookup = this.lookups[node];
    if (lookup !== undefined) {
      lookup.set(worker, count);
    } else if (count + 1 > LOOKUP_THRESHOLD) {
      const created = new Map<number, number>();
      for (let slot = 0; slot <= count; slot++) created.set(this.workerAt(node, slot), slot);
      this.lookups[node] = created;
    }
  }

  /** Removes the member at `slot`, moving the last member into its place. */
  private removeSlot(node: number, slot: number): void {
    const last = (this.counts[node] as number) - 1;
    const removed = this.workerAt(node, slot);
    const lookup = this.lookups[node];
    if (slot !== last) {
      const moved = this.workerAt(node, last);
      this.setMember(node, slot, moved, this.stampAt(node, last));
      lookup?.set(moved, slot);
    }
    if (last > 0) {
      // The last extra slot is now unused; a node left with its first member alone gives its chunk back.
      if (last === 1) this.releaseMore(node);
    } else {
      this.workers0[node] = NONE;
    }
    this.counts[node] = last;
    if (lookup !== undefined) {
      lookup.delete(removed);
      if (last <= LOOKUP_THRESHOLD / 2) this.lookups[node] = undefined;
    }
  }

  /** Gives a node's chunk of extra members back to the arena. */
  private releaseMore(node: number): void {
    const at = this.moreAt[node] as number;
    if (at === NONE) return;
    this.arena.release(at, this.moreLog2[node] as number);
    this.moreAt[node] = NONE;
  }

  private worker(id: string): WorkerLog {
    let worker = this.workerIndex.get(id);
    if (worker === undefined) {
      worker = {
        index: this.workerByIndex.length,
        id,
        blocks: 0,
        nodes: [],
        stamps: [],
        times: [],
        head: 0,
        last: NONE,
      };
      this.workerIndex.set(id, worker);
      this.workerByIndex.push(worker);
    }
    return worker;
  }

  private touch(worker: WorkerLog, node: number, now: number): void {
    const stamp = ++this.stamp;
    const slot = this.slotOf(node, worker.index);
    if (slot < 0) {
      this.addMember(node, worker.index, stamp);
      worker.blocks++;
      this.memberships++;
    }
    if (!this.trackAges) return;
    if (slot === 0) this.stamps0[node] = stamp;
    else if (slot > 0) this.arena.stamps[(this.moreAt[node] as number) + slot - 1] = stamp;
    worker.nodes.push(node);
    worker.stamps.push(stamp);
    if (this.ttlMs !== undefined) worker.times.push(now);
    // Re-touches leave dead entries behind: keep the log within twice the live size.
    if (worker.nodes.length - worker.head > 2 * worker.blocks + 64) this.compactLog(worker, true);
  }

  /** Removes `worker` from `start` and every descendant holding it; detaches nodes left empty. */
  private removeSubtree(worker: WorkerLog, start: number): number {
    const w = worker.index;
    // Scratch arrays reused across calls: a removal event should not allocate.
    const visited = this.scratchVisited;
    const stack = this.scratchStack;
    visited.length = 0;
    stack.length = 0;
    stack.push(start);
    while (stack.length > 0) {
      const node = stack.pop() as number;
      const slot = this.slotOf(node, w);
      if (slot < 0) continue;
      this.removeSlot(node, slot);
      visited.push(node);
      for (let child = this.firstChildren[node] as number; child !== NONE; child = this.nextSiblings[child] as number) {
        if (this.slotOf(child, w) >= 0) stack.push(child);
      }
    }
    worker.blocks -= visited.length;
    this.memberships -= visited.length;
    // Children were visited after their parents: detach in reverse so leaves go first.
    for (let i = visited.length - 1; i >= 0; i--) {
      const node = visited[i] as number;
      if (this.counts[node] === 0 && this.firstChildren[node] === NONE) this.detach(node);
    }
    return visited.length;
  }

  /** Removes a whole subtree, every worker included (size pruning without ages). */
  private dropNode(start: number): number {
    let removed = 0;
    const stack: number[] = [start];
    const visited: number[] = [];
    while (stack.length > 0) {
      const node = stack.pop() as number;
      visited.push(node);
      const count = this.counts[node] as number;
      for (let slot = 0; slot < count; slot++) {
        const worker = this.workerByIndex[this.workerAt(node, slot)];
        if (worker !== undefined) worker.blocks--;
      }
      removed += count;
      this.counts[node] = 0;
      this.releaseMore(node);
      this.lookups[node] = undefined;
      for (let child = this.firstChildren[node] as number; child !== NONE; child = this.nextSiblings[child] as number) {
        stack.push(child);
      }
    }
    this.memberships -= removed;
    for (let i = visited.length - 1; i >= 0; i--) {
      const node = visited[i] as number;
      this.firstChildren[node] = NONE;
      this.detach(node);
    }
    return removed;
  }

  /** Removes the membership at the head of a worker's log if it is still live; advances the head. */
  private dropHead(worker: WorkerLog): number {
    const node = worker.nodes[worker.head] as number;
    const stamp = worker.stamps[worker.head] as number;
    worker.head++;
    const slot = this.slotOf(node, worker.index);
    return slot >= 0 && this.stampAt(node, slot) === stamp ? this.removeSubtree(worker, node) : 0;
  }

  private compactLog(worker: WorkerLog, force = false): void {
    const length = worker.nodes.length;
    // Amortised O(1): compact once the dead head is at least half the log.
    if (!force && (worker.head === 0 || worker.head * 2 < length)) return;
    const withTimes = this.ttlMs !== undefined;
    const nodes: number[] = [];
    const stamps: number[] = [];
    const times: number[] = [];
    for (let i = worker.head; i < length; i++) {
      const node = worker.nodes[i] as number;
      const stamp = worker.stamps[i] as number;
      const slot = this.slotOf(node, worker.index);
      if (slot < 0 || this.stampAt(node, slot) !== stamp) continue;
      nodes.push(node);
      stamps.push(stamp);
      if (withTimes) times.push(worker.times[i] as number);
    }
    worker.nodes = nodes;
    worker.stamps = stamps;
    worker.times = times;
    worker.head = 0;
  }

  /**
   * Brings the tree back to `maxBlocks * pruneTargetRatio`: with ages, the
   * globally least recently touched memberships first (a merge over the
   * workers' logs); without, the earliest created blocks with their
   * subtrees (by node number, which follows creation order but for reuse).
   */
  private pruneToSize(): void {
    const target = Math.floor(this.maxBlocks * this.pruneTargetRatio);
    let removed = 0;
    if (!this.trackAges) {
      // Node numbers are handed out in creation order (freed ones are reused): lowest first is roughly oldest first.
      for (let node = 1; node < this.nodeCount && this.memberships > target; node++) {
        if (this.hashes[node] !== undefined) removed += this.dropNode(node);
      }
      this.pruned += removed;
      return;
    }
    const headStamp = (worker: WorkerLog): number => worker.stamps[worker.head] as number;
    const heap = new BinaryHeap<WorkerLog>((a, b) => headStamp(a) < headStamp(b));
    for (const worker of this.workerIndex.values()) if (worker.head < worker.nodes.length) heap.push(worker);
    while (this.memberships > target && heap.size > 0) {
      const worker = heap.pop() as WorkerLog;
      removed += this.dropHead(worker);
      if (worker.head < worker.nodes.length) heap.push(worker);
    }
    for (const worker of this.workerIndex.values()) this.compactLog(worker);
    this.pruned += removed;
  }
}

/**
 * The answer of {@link RadixTree.findMatches}: leading blocks held per
 * worker id, as a read-only map. Backed by one array indexed by the tree's
 * worker numbers, so building it costs nothing per worker beyond the match
 * itself; workers holding none of the prompt are absent.
 */
export class MatchScores implements ReadonlyMap<string, number> {
  constructor(
    private readonly depths: Uint32Array,
    private readonly matched: readonly number[],
    private readonly byId: ReadonlyMap<string, WorkerLog>,
    private readonly byIndex: readonly (WorkerLog | undefined)[],
  ) {}

  get size(): number {
    return this.matched.length;
  }

  get(workerId: string): number | undefined {
    const index = this.byId.get(workerId)?.index;
    if (index === undefined || index >= this.depths.length) return undefined;
    const depth = this.depths[index] as number;
    return depth === 0 ? undefined : depth;
  }

  has(workerId: string): boolean {
    return this.get(workerId) !== undefined;
  }

  *entries(): MapIterator<[string, number]> {
    for (const index of this.matched) {
      const worker = this.byIndex[index];
      if (worker !== undefined) yield [worker.id, this.depths[index] as number];
    }
  }

  *keys(): MapIterator<string> {
    for (const [id] of this.entries()) yield id;
  }

  *values(): MapIterator<number> {
    for (const [, depth] of this.entries()) yield depth;
  }

  forEach(callback: (value: number, key: string, map: ReadonlyMap<string, number>) => void): void {
    for (const [id, depth] of this.entries()) callback(depth, id, this);
  }

  [Symbol.iterator](): MapIterator<[string, number]> {
    return this.entries();
  }
}
