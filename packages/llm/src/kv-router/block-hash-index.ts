/** What {@link BlockHashIndex.nodeAt} returns for an empty slot. */
const EMPTY = -1;
/** An empty slot in the table: node 0 (the tree's root) is never indexed, so a zeroed table is an empty one. */
const FREE = 0;
const INITIAL_SLOTS = 1024;

/**
 * Block hash -> node number, for the radix tree: an open-addressing table
 * (linear probing, backward-shift deletion) whose keys are the tree's own
 * hash strings, so an entry costs two 32-bit slots and no per-entry
 * allocation. It exists because `Map` made each new block cost a miss lookup
 * and then an insert (two probes of a large table); `slotFor` does both in
 * one probe. Each slot keeps a 32-bit fingerprint of its hash next to the
 * node number, so a probe touches one cache line and only compares strings
 * when fingerprints agree.
 */
export class BlockHashIndex {
  /** Slot s is `table[2s]` (node number or FREE) and `table[2s + 1]` (its fingerprint): one cache line per probe. */
  private table = BlockHashIndex.emptyTable(INITIAL_SLOTS);
  private mask = INITIAL_SLOTS - 1;
  private count = 0;

  /** `keys[node]` is the hash string of node `node` (the tree's array, read in place). */
  constructor(private readonly keys: readonly (string | undefined)[]) {}

  get size(): number {
    return this.count;
  }

  /**
   * 32 well-mixed bits of a hash. Block hashes are 16 hex digits of a 64-bit
   * xxh3 value, whose low 8 digits are already uniform; other strings (tests)
   * go through FNV-1a.
   */
  static fingerprint(hash: string): number {
    if (hash.length === 16) {
      let x = 0;
      for (let i = 8; i < 16; i++) {
        const c = hash.charCodeAt(i);
        x = (x << 4) | (c <= 57 ? c - 48 : (c | 32) - 87);
      }
      return x;
    }
    let x = -2128831035;
    for (let i = 0; i < hash.length; i++) x = Math.imul(x ^ hash.charCodeAt(i), 16777619);
    return x ^ (x >>> 15);
  }

  /**
   * The slot holding `hash`, or the empty slot where it belongs. Read the
   * node with {@link nodeAt} (EMPTY when absent); insert with {@link insertAt}.
   */
  slotFor(hash: string, fingerprint: number): number {
    const table = this.table;
    const keys = this.keys;
    const mask = this.mask;
    let i = fingerprint & mask;
    for (;;) {
      const node = table[2 * i] as number;
      if (node === FREE || (table[2 * i + 1] === fingerprint && keys[node] === hash)) return i;
      i = (i + 1) & mask;
    }
  }

  nodeAt(slot: number): number {
    const node = this.table[2 * slot] as number;
    return node === FREE ? EMPTY : node;
  }

  /**
   * Fills an empty slot returned by {@link slotFor} (for the same hash, with
   * no insert in between). Node numbers are positive: 0 marks a free slot.
   */
  insertAt(slot: number, fingerprint: number, node: number): void {
    this.table[2 * slot] = node;
    this.table[2 * slot + 1] = fingerprint;
    this.count++;
    // Keep the load factor at or below 1/2.
    if (this.count * 2 > this.mask + 1) this.grow();
  }

  get(hash: string): number | undefined {
    const node = this.nodeAt(this.slotFor(hash, BlockHashIndex.fingerprint(hash)));
    return node === EMPTY ? undefined : node;
  }

  has(hash: string): boolean {
    return this.get(hash) !== undefined;
  }

  set(hash: string, node: number): void {
    const fingerprint = BlockHashIndex.fingerprint(hash);
    const slot = this.slotFor(hash, fingerprint);
    if (this.nodeAt(slot) !== EMPTY) this.table[2 * slot] = node;
    else this.insertAt(slot, fingerprint, node);
  }

  delete(hash: string): boolean {
    let i = this.slotFor(hash, BlockHashIndex.fingerprint(hash));
    const table = this.table;
    if (table[2 * i] === FREE) return false;
    const mask = this.mask;
    // Backward-shift deletion: pull later entries of the probe run into the hole.
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const node = table[2 * j] as number;
      if (node === FREE) break;
      const home = (table[2 * j + 1] as number) & mask;
      const outside = j > i ? home <= i || home > j : home <= i && home > j;
      if (outside) {
        table[2 * i] = node;
        table[2 * i + 1] = table[2 * j + 1] as number;
        i = j;
      }
    }
    table[2 * i] = FREE;
    this.count--;
    return true;
  }

  /** A table of empty slots: zeroed memory, nothing to fill. */
  private static emptyTable(slots: number): Int32Array {
    return new Int32Array(2 * slots);
  }

  private grow(): void {
    const old = this.table;
    const slots = old.length; // twice the old slot count
    this.table = BlockHashIndex.emptyTable(slots);
    this.mask = slots - 1;
    for (let s = 0; s < old.length; s += 2) {
      const node = old[s] as number;
      if (node === FREE) continue;
      const fingerprint = old[s + 1] as number;
      let i = fingerprint & this.mask;
      while (this.table[2 * i] !== FREE) i = (i + 1) & this.mask;
      this.table[2 * i] = node;
      this.table[2 * i + 1] = fingerprint;
    }
  }
}
