import type { EventMessage, EventSubscription } from "./event-plane.js";

export interface BufferedSubscriptionOptions {
  /** Resolves when the backend has registered the subscription. Must never reject. */
  ready?: Promise<void>;
  /** Ends the subscription when it aborts; attached by `start()`. */
  signal?: AbortSignal;
  /** Called once when the subscription ends for any reason: release the backend side. */
  onClose: () => void;
  /** Called on each dropped event with the running total (backends log the first). */
  onDrop?: (dropped: number) => void;
}

/**
 * The bounded, single-consumer buffer behind every event subscription.
 * Backends `push` events as they arrive (never awaiting the consumer); when
 * `maxBuffered` events already wait, the oldest is dropped and counted, so a
 * slow consumer costs a bounded amount of memory and never stalls the backend.
 */
export class BufferedSubscription<T> implements EventSubscription<T> {
  readonly ready: Promise<void>;
  private items: (EventMessage<T> | undefined)[] = [];
  private head = 0;
  private waiter: { resolve: (r: IteratorResult<EventMessage<T>>) => void; reject: (e: unknown) => void } | undefined;
  private state: "open" | "closed" | "failed" = "open";
  private failure: unknown;
  private droppedCount = 0;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = (): void => this.close();
  private readonly onClose: () => void;
  private readonly onDrop: ((dropped: number) => void) | undefined;

  constructor(
    readonly subject: string,
    private readonly maxBuffered: number,
    options: BufferedSubscriptionOptions,
  ) {
    this.ready = options.ready ?? Promise.resolve();
    this.onClose = options.onClose;
    this.onDrop = options.onDrop;
    this.signal = options.signal;
  }

  /**
   * Attaches the abort signal; call once the backend side is wired, since an
   * already-aborted signal closes (and so releases) the subscription at once.
   */
  start(): this {
    if (this.signal?.aborted) this.close();
    else if (this.state === "open") this.signal?.addEventListener("abort", this.onAbort, { once: true });
    return this;
  }

  get dropped(): number {
    return this.droppedCount;
  }

  get buffered(): number {
    return this.items.length - this.head;
  }

  get closed(): boolean {
    return this.state !== "open";
  }

  /** Delivers an event; drops the oldest buffered one when the buffer is full. */
  push(message: EventMessage<T>): void {
    if (this.state !== "open") return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter.resolve({ value: message, done: false });
      return;
    }
    if (this.buffered >= this.maxBuffered) {
      this.items[this.head] = undefined;
      this.head++;
      this.droppedCount++;
      this.onDrop?.(this.droppedCount);
    }
    this.items.push(message);
    this.compact();
  }

  /** Ends iteration at once (done, no error); buffered events are discarded. */
  close(): void {
    if (this.state !== "open") return;
    this.state = "closed";
    this.items = [];
    this.head = 0;
    this.release();
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve({ value: undefined, done: true });
  }

  /** Ends iteration with `err` after the buffered events (the backend refused the subscription). */
  fail(err: unknown): void {
    if (this.state !== "open") return;
    this.state = "failed";
    this.failure = err;
    this.release();
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(err);
    if (waiter) this.failure = undefined;
  }

  next(): Promise<IteratorResult<EventMessage<T>>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head] as EventMessage<T>;
      this.items[this.head] = undefined;
      this.head++;
      this.compact();
      return Promise.resolve({ value, done: false });
    }
    if (this.state === "failed" && this.failure !== undefined) {
      const err = this.failure;
      this.failure = undefined;
      return Promise.reject(err);
    }
    if (this.state !== "open") return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<EventMessage<T>>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<EventMessage<T>> {
    return this;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private release(): void {
    this.signal?.removeEventListener("abort", this.onAbort);
    this.onClose();
  }

  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}
