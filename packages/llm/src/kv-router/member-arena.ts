const INITIAL_SLOTS = 4096;

/**
 * Storage for the members of radix tree nodes beyond the first: a node with
 * extra members owns one chunk of `2^k` (worker, stamp) slots in two typed
 * arrays and moves to a chunk twice the size when it fills. Freed chunks go
 * to a free list per size and are reused, so adding and removing members
 * allocates no garbage-collected objects; the arrays double when full. (A
 * JS array per node made membership growth the indexer's main source of
 * garbage: ~200 bytes per applied event.)
 */
export class MemberArena {
  /** Worker index per slot. Replaced when the arena grows: do not keep a reference across `alloc`. */
  workers = new Int32Array(INITIAL_SLOTS);
  /** Stamp per slot (same layout as `workers`); empty when the arena keeps no stamps. */
  stamps: Float64Array;
  #top = 0;
  readonly #free: number[][] = [];

  /**
   * `withStamps: false` keeps worker indexes only: a tree that tracks no
   * ages never reads a stamp, and stamps are two thirds of the arena's bytes.
   */
  constructor(readonly withStamps = true) {
    this.stamps = new Float64Array(withStamps ? INITIAL_SLOTS : 0);
  }

  /** Offset of a free chunk of `2^log2` slots. */
  alloc(log2: number): number {
    const reused = this.#free[log2]?.pop();
    if (reused !== undefined) return reused;
    const size = 1 << log2;
    if (this.#top + size > this.workers.length) this.#grow(this.#top + size);
    const offset = this.#top;
    this.#top += size;
    return offset;
  }

  /** Returns a chunk from `alloc(log2)` for reuse. */
  release(offset: number, log2: number): void {
    let list = this.#free[log2];
    if (list === undefined) {
      list = [];
      this.#free[log2] = list;
    }
    list.push(offset);
  }

  /** Copies `count` slots from one chunk to another. */
  move(from: number, to: number, count: number): void {
    // Chunks are small: a loop beats two copyWithin calls here.
    const { workers, stamps } = this;
    for (let i = 0; i < count; i++) workers[to + i] = workers[from + i] as number;
    if (this.withStamps) for (let i = 0; i < count; i++) stamps[to + i] = stamps[from + i] as number;
  }

  /** Slots handed out, free chunks included (for tests and stats). */
  get usedSlots(): number {
    return this.#top;
  }

  #grow(minimum: number): void {
    let size = this.workers.length * 2;
    while (size < minimum) size *= 2;
    const workers = new Int32Array(size);
    workers.set(this.workers);
    this.workers = workers;
    if (!this.withStamps) return;
    const stamps = new Float64Array(size);
    stamps.set(this.stamps);
    this.stamps = stamps;
  }
}
