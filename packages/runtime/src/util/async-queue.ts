/**
 * A single-consumer queue exposed as an async iterator. Producers `push`;
 * `end` finishes the stream after buffered items; `fail` finishes it with an
 * error after buffered items. Bounding is the producer's job (credit windows,
 * discovery event rates); `size` lets it check.
 *
 * `onReturn` runs once when the consumer stops early (`break`, `return()`).
 */
export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  private items: T[] = [];
  private head = 0;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private failure: unknown = undefined;
  private failed = false;
  private returned = false;

  constructor(private readonly onReturn?: () => void) {}

  get size(): number {
    return this.items.length - this.head;
  }

  get closed(): boolean {
    return this.ended || this.failed || this.returned;
  }

  push(item: T): void {
    if (this.closed) return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  end(): void {
    if (this.closed) return;
    this.ended = true;
    this.settleWaiter();
  }

  fail(err: unknown): void {
    if (this.closed) return;
    this.failed = true;
    this.failure = err;
    this.settleWaiter();
  }

  /** Removes and returns every item buffered right now, without waiting. */
  takeBuffered(): T[] {
    if (this.head >= this.items.length) return [];
    const taken = this.head === 0 ? this.items : this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return taken;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head] as T;
      this.items[this.head] = undefined as T;
      this.head++;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.failed) return Promise.reject(this.failure);
    if (this.ended || this.returned) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    if (!this.returned) {
      const wasOpen = !this.ended && !this.failed;
      this.returned = true;
      this.items = [];
      this.head = 0;
      this.settleWaiter();
      if (wasOpen) this.onReturn?.();
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private settleWaiter(): void {
    const waiter = this.waiter;
    if (!waiter || this.head < this.items.length) return;
    this.waiter = undefined;
    if (this.failed) waiter.reject(this.failure);
    else waiter.resolve({ value: undefined, done: true });
  }
}
