import { TdistError } from "../errors/tdist-error.js";
import { decodeJson, encodeJson } from "../event-plane/json-payload.js";
import { type Logger, silentLogger } from "../logger.js";
import { toAbortError } from "../util/abort.js";
import {
  type DequeueOptions,
  type ResolvedWorkQueueOptions,
  resolveWorkQueueOptions,
  validateDequeueTimeout,
  validateNakDelay,
  validateQueueName,
  type WorkItem,
  type WorkQueue,
  type WorkQueueOptions,
  type WorkQueues,
} from "./work-queue.js";

interface QueueEntry {
  readonly seq: number;
  readonly data: string;
  deliveryCount: number;
  /** Token of the current delivery: settling an older delivery (after redelivery) is ignored. */
  delivery: number;
  /** Ack-wait or nak-delay timer while the entry is in flight. */
  timer: NodeJS.Timeout | undefined;
}

interface Delivery {
  readonly seq: number;
  readonly data: string;
  readonly deliveryCount: number;
  readonly delivery: number;
}

interface Waiter {
  deliver(delivery: Delivery): void;
}

/** One named queue inside a broker: ready items, in-flight items and waiting consumers. Internal. */
export class MemoryQueueState {
  private readonly ready: QueueEntry[] = [];
  private readonly inFlight = new Map<number, QueueEntry>();
  private readonly waiters: Waiter[] = [];
  private nextSeq = 1;
  private deliveries = 0;

  constructor(
    readonly name: string,
    public options: ResolvedWorkQueueOptions,
    public logger: Logger,
  ) {}

  get depth(): number {
    return this.ready.length + this.inFlight.size;
  }

  enqueue(data: string): void {
    this.ready.push({ seq: this.nextSeq++, data, deliveryCount: 0, delivery: 0, timer: undefined });
    this.dispatch();
  }

  addWaiter(waiter: Waiter): void {
    this.waiters.push(waiter);
    this.dispatch();
  }

  removeWaiter(waiter: Waiter): void {
    const index = this.waiters.indexOf(waiter);
    if (index >= 0) this.waiters.splice(index, 1);
  }

  /** Acks by item, whichever delivery: a late ack after an ack-wait expiry still removes it (as JetStream does). */
  ack(seq: number): void {
    const entry = this.inFlight.get(seq);
    if (entry) {
      clearTimeout(entry.timer);
      this.inFlight.delete(seq);
      return;
    }
    const index = this.ready.findIndex((e) => e.seq === seq);
    if (index >= 0) this.ready.splice(index, 1);
  }

  nak(seq: number, delivery: number, delayMs: number): void {
    const entry = this.current(seq, delivery);
    if (!entry) return;
    clearTimeout(entry.timer);
    if (delayMs > 0) entry.timer = this.arm(entry, delayMs);
    else this.redeliver(entry);
  }

  touch(seq: number, delivery: number): void {
    const entry = this.current(seq, delivery);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.timer = this.arm(entry, this.options.ackWaitMs);
  }

  private current(seq: number, delivery: number): QueueEntry | undefined {
    const entry = this.inFlight.get(seq);
    return entry?.delivery === delivery ? entry : undefined;
  }

  private arm(entry: QueueEntry, ms: number): NodeJS.Timeout {
    const { delivery } = entry;
    const timer = setTimeout(() => {
      if (this.current(entry.seq, delivery)) this.redeliver(entry);
    }, ms);
    timer.unref();
    return timer;
  }

  /** Redeliveries go ahead of new items, as JetStream's redelivery queue does. */
  private redeliver(entry: QueueEntry): void {
    clearTimeout(entry.timer);
    entry.timer = undefined;
    this.inFlight.delete(entry.seq);
    let index = 0;
    while (index < this.ready.length && (this.ready[index] as QueueEntry).deliveryCount > 0) index++;
    this.ready.splice(index, 0, entry);
    this.dispatch();
  }

  private dispatch(): void {
    while (this.waiters.length > 0 && this.ready.length > 0) {
      const entry = this.ready.shift() as QueueEntry;
      if (entry.deliveryCount >= this.options.maxDeliver) {
        this.logger.warn(
          { queue: this.name, item: String(entry.seq), deliveries: entry.deliveryCount },
          "dropping work item that reached maxDeliver",
        );
        continue;
      }
      entry.deliveryCount++;
      entry.delivery = ++this.deliveries;
      this.inFlight.set(entry.seq, entry);
      entry.timer = this.arm(entry, this.options.ackWaitMs);
      const waiter = this.waiters.shift() as Waiter;
      waiter.deliver({
        seq: entry.seq,
        data: entry.data,
        deliveryCount: entry.deliveryCount,
        delivery: entry.delivery,
      });
    }
  }
}

/**
 * The shared state behind memory work queues. Runtimes in one process given
 * the same broker share queues by name, as processes sharing a JetStream
 * server would. Nothing is persisted.
 */
export class MemoryWorkQueueBroker {
  private static sharedBroker: MemoryWorkQueueBroker | undefined;
  private readonly queues = new Map<string, MemoryQueueState>();

  /** The process-wide broker that work queues use when given no other. */
  static shared(): MemoryWorkQueueBroker {
    MemoryWorkQueueBroker.sharedBroker ??= new MemoryWorkQueueBroker();
    return MemoryWorkQueueBroker.sharedBroker;
  }

  /** The queue of that name, created on first use; the latest options win. */
  queue(name: string, options: ResolvedWorkQueueOptions, logger: Logger): MemoryQueueState {
    let state = this.queues.get(name);
    if (state) {
      state.options = options;
      state.logger = logger;
    } else {
      state = new MemoryQueueState(name, options, logger);
      this.queues.set(name, state);
    }
    return state;
  }
}

export interface MemoryWorkQueuesOptions {
  /** The broker to share; defaults to the process-wide one. */
  broker?: MemoryWorkQueueBroker;
  logger?: Logger;
}

/** Work queues in process memory: embedded mode's backend. */
export class MemoryWorkQueues implements WorkQueues {
  readonly kind = "memory" as const;
  readonly broker: MemoryWorkQueueBroker;
  private readonly logger: Logger;
  private readonly handles = new Set<MemoryWorkQueue<unknown>>();
  private closed = false;

  constructor(options: MemoryWorkQueuesOptions = {}) {
    this.broker = options.broker ?? MemoryWorkQueueBroker.shared();
    this.logger = options.logger ?? silentLogger;
  }

  async open<T = unknown>(name: string, options?: WorkQueueOptions): Promise<WorkQueue<T>> {
    if (this.closed) throw new TdistError("shutting_down", "work queues are closed");
    validateQueueName(name);
    const resolved = resolveWorkQueueOptions(options);
    const state = this.broker.queue(name, resolved, this.logger);
    const handle = new MemoryWorkQueue<T>(state, () => this.handles.delete(handle as MemoryWorkQueue<unknown>));
    this.handles.add(handle as MemoryWorkQueue<unknown>);
    return handle;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.handles].map((handle) => handle.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** One handle on a memory queue. */
export class MemoryWorkQueue<T> implements WorkQueue<T> {
  private readonly pending = new Set<{ fail(err: TdistError): void }>();
  private closed = false;

  constructor(
    private readonly state: MemoryQueueState,
    private readonly onClose: () => void,
  ) {}

  get name(): string {
    return this.state.name;
  }

  async enqueue(item: T): Promise<void> {
    this.assertOpen();
    this.state.enqueue(encodeJson(`work queue ${this.name}`, item));
  }

  dequeue(options: DequeueOptions = {}): Promise<WorkItem<T> | undefined> {
    try {
      this.assertOpen();
      validateDequeueTimeout(options.timeoutMs);
      if (options.signal?.aborted) throw toAbortError(options.signal.reason);
    } catch (err) {
      return Promise.reject(err);
    }
    const { signal, timeoutMs } = options;
    return new Promise<WorkItem<T> | undefined>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.state.removeWaiter(waiter);
        this.pending.delete(pendingEntry);
      };
      const onAbort = (): void => {
        finish();
        reject(toAbortError(signal?.reason));
      };
      const pendingEntry = {
        fail: (err: TdistError): void => {
          finish();
          reject(err);
        },
      };
      const waiter: Waiter = {
        deliver: (delivery) => {
          finish();
          resolve(this.toItem(delivery));
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined && Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          finish();
          resolve(undefined);
        }, timeoutMs);
      }
      this.pending.add(pendingEntry);
      this.state.addWaiter(waiter);
    });
  }

  async depth(): Promise<number> {
    this.assertOpen();
    return this.state.depth;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const error = new TdistError("shutting_down", `work queue ${this.name} handle closed`);
    for (const entry of [...this.pending]) entry.fail(error);
    this.onClose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private toItem(delivery: Delivery): WorkItem<T> {
    const { state } = this;
    let settled = false;
    return {
      payload: decodeJson<T>(`work queue ${this.name}`, delivery.data),
      deliveryCount: delivery.deliveryCount,
      id: String(delivery.seq),
      async ack() {
        if (settled) return;
        settled = true;
        state.ack(delivery.seq);
      },
      async nak(delayMs = 0) {
        validateNakDelay(delayMs);
        if (settled) return;
        settled = true;
        state.nak(delivery.seq, delivery.delivery, delayMs);
      },
      async inProgress() {
        if (!settled) state.touch(delivery.seq, delivery.delivery);
      },
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new TdistError("shutting_down", `work queue ${this.name} handle is closed`);
  }
}
