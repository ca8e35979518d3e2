import { TdistError } from "../errors/tdist-error.js";

/**
 * The work queue seam (the prefill queue, job queues): a named, durable FIFO
 * shared by every process that opens it, delivering each item to one consumer
 * at a time, at least once. `memory` serves embedded mode (several runtimes in
 * one process can share one broker); `nats` (a JetStream work-queue stream
 * with one shared durable pull consumer) serves cluster mode.
 *
 * A dequeued item must be settled: `ack()` removes it; `nak()` hands it back
 * for redelivery; an item neither acked nor nak'd within `ackWaitMs` of its
 * delivery (or of its last `inProgress()`) is redelivered to any consumer, so
 * an item held by a consumer that died is not lost. Each delivery raises
 * `deliveryCount`; an item about to be delivered more than `maxDeliver` times
 * is dropped instead (logged as a warning), so a poison item cannot circulate
 * forever.
 *
 * ```ts
 * const queue = await queues.open<PrefillJob>("prefill", { ackWaitMs: 30_000 });
 * await queue.enqueue(job);
 * const item = await queue.dequeue({ signal, timeoutMs: 5_000 });
 * if (item) {
 *   try { await prefill(item.payload); await item.ack(); }
 *   catch { await item.nak(1_000); }
 * }
 * ```
 */

/** One delivery of a queued item. Settling (ack/nak) a second time is a no-op. */
export interface WorkItem<T> {
  /** The decoded JSON payload; each delivery gets its own copy. */
  readonly payload: T;
  /** 1 on first delivery, +1 on every redelivery. */
  readonly deliveryCount: number;
  /** An id stable across redeliveries of the item (for logs). */
  readonly id: string;
  /** Marks the item done; it is removed from the queue. */
  ack(): Promise<void>;
  /** Hands the item back for redelivery, at once or after `delayMs`. */
  nak(delayMs?: number): Promise<void>;
  /** Restarts the ack-wait clock: the consumer is still working on the item. */
  inProgress(): Promise<void>;
}

export interface DequeueOptions {
  /** Rejects the pending dequeue with a `cancelled` error when it aborts. */
  signal?: AbortSignal;
  /** Resolves `undefined` when no item arrives within this many ms. Default: wait indefinitely. */
  timeoutMs?: number;
}

export interface WorkQueue<T = unknown> {
  /** The queue name as given to `open`. */
  readonly name: string;
  /** Appends an item (JSON-serialisable, else `codec_error`). Resolves once the backend stored it. */
  enqueue(item: T): Promise<void>;
  /**
   * Waits for the next item. Resolves `undefined` on timeout; rejects with
   * `cancelled` when the signal aborts and `shutting_down` when the queue
   * handle closes meanwhile.
   */
  dequeue(options?: DequeueOptions): Promise<WorkItem<T> | undefined>;
  /**
   * Items not yet acknowledged: waiting for delivery, plus delivered (or
   * nak'd with a delay) but not yet acked. An estimate under concurrency.
   */
  depth(): Promise<number>;
  /**
   * Closes this handle; pending dequeues reject with `shutting_down`. Items
   * it delivered and that are still unsettled are NOT handed back: they are
   * redelivered after their ack wait, exactly as if this process had died.
   * Nak them first for a prompt hand-back.
   */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface WorkQueueOptions {
  /** How long a delivered item may stay unsettled before it is redelivered (ms). Default 30 000. */
  ackWaitMs?: number;
  /** Deliveries an item may get before it is dropped; `Infinity` never drops. Default 5. */
  maxDeliver?: number;
}

export interface ResolvedWorkQueueOptions {
  ackWaitMs: number;
  maxDeliver: number;
}

/**
 * Opens work queues on one backend. In NATS terms the queue's settings
 * (`ackWaitMs`, `maxDeliver`) belong to the shared queue, not to a handle: the
 * last `open` with different settings updates them for everyone.
 */
export interface WorkQueues {
  readonly kind: "memory" | "nats";
  open<T = unknown>(name: string, options?: WorkQueueOptions): Promise<WorkQueue<T>>;
  /** Closes every queue handle opened here and releases the backend connection. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export const DEFAULT_ACK_WAIT_MS = 30_000;
export const DEFAULT_MAX_DELIVER = 5;

const QUEUE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** Validates a queue name: lower-case letters, digits, `-` and `_`, 1-63 characters; throws `invalid_name`. */
export function validateQueueName(name: unknown): string {
  if (typeof name !== "string" || !QUEUE_NAME_PATTERN.test(name)) {
    throw new TdistError(
      "invalid_name",
      `invalid work queue name ${JSON.stringify(name)}: use lower-case letters, digits, '-' and '_' (1-63 characters)`,
    );
  }
  return name;
}

/** Applies defaults and validates, naming the offending option. */
export function resolveWorkQueueOptions(options: WorkQueueOptions = {}): ResolvedWorkQueueOptions {
  const ackWaitMs = options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
  if (!Number.isInteger(ackWaitMs) || ackWaitMs < 1) {
    throw new TdistError("invalid_option", `ackWaitMs must be a positive integer (ms), got ${String(ackWaitMs)}`);
  }
  const maxDeliver = options.maxDeliver ?? DEFAULT_MAX_DELIVER;
  if (maxDeliver !== Number.POSITIVE_INFINITY && (!Number.isInteger(maxDeliver) || maxDeliver < 1)) {
    throw new TdistError(
      "invalid_option",
      `maxDeliver must be a positive integer or Infinity, got ${String(maxDeliver)}`,
    );
  }
  return { ackWaitMs, maxDeliver };
}

/** Validates dequeue options; throws `invalid_option`. */
export function validateDequeueTimeout(timeoutMs: number | undefined): void {
  if (timeoutMs === undefined) return;
  if (typeof timeoutMs !== "number" || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw new TdistError("invalid_option", `timeoutMs must be a number >= 0, got ${String(timeoutMs)}`);
  }
}

/** Validates a nak delay (ms >= 0); throws `invalid_option`. */
export function validateNakDelay(delayMs: number): void {
  if (typeof delayMs !== "number" || !Number.isFinite(delayMs) || delayMs < 0) {
    throw new TdistError("invalid_option", `nak delayMs must be a finite number >= 0, got ${String(delayMs)}`);
  }
}
