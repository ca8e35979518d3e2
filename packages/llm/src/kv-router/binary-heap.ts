/**
 * A binary min-heap ordered by `less`: push and pop in O(log n). Used by the
 * radix tree's size bound (workers by their oldest membership) and by the
 * routing benchmark's simulated clock (timers by due time).
 *
 * ```ts
 * const heap = new BinaryHeap<number>((a, b) => a < b);
 * heap.push(3);
 * heap.push(1);
 * heap.pop(); // 1
 * ```
 */
export class BinaryHeap<T> {
  private readonly items: T[] = [];

  constructor(private readonly less: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!this.less(items[i] as T, items[up] as T)) break;
      [items[i], items[up]] = [items[up] as T, items[i] as T];
      i = up;
    }
  }

  /** Removes and returns the least item; undefined when empty. */
  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < items.length && this.less(items[l] as T, items[m] as T)) m = l;
        if (r < items.length && this.less(items[r] as T, items[m] as T)) m = r;
        if (m === i) break;
        [items[i], items[m]] = [items[m] as T, items[i] as T];
        i = m;
      }
    }
    return top;
  }
}
