import {
  AckPolicy,
  type Consumer,
  type ConsumerConfig,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { type NatsConnection, nanos } from "@nats-io/transport-node";
import { TdistError } from "../errors/tdist-error.js";
import { encodeJson } from "../event-plane/json-payload.js";
import { connectNats, drainNats, type NatsConnectOptions } from "../event-plane/nats-connection.js";
import { type Logger, silentLogger } from "../logger.js";
import { abortPromise, delay, toAbortError } from "../util/abort.js";
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

/** JetStream names of one queue: stream `TDIST_WQ_<name>`, subject `tdist.wq.<name>`, durable `tdist_wq_<name>`. */
export function natsWorkQueueNames(name: string): { stream: string; subject: string; durable: string } {
  validateQueueName(name);
  return { stream: `TDIST_WQ_${name}`, subject: `tdist.wq.${name}`, durable: `tdist_wq_${name}` };
}

/** The smallest pull the client accepts (ms). */
const MIN_PULL_MS = 1_000;
/**
 * The longest single pull (ms). Long waits are a series of pulls, which bounds
 * how long a pull orphaned by an aborted dequeue or a lost connection can
 * linger on the server.
 */
const MAX_PULL_MS = 5_000;

export interface NatsWorkQueuesConnectionOptions {
  logger?: Logger;
  /** Timeout of JetStream API requests (enqueue, ack, depth, setup), ms. Default 5 000. */
  apiTimeoutMs?: number;
}

export interface NatsWorkQueuesOptions extends NatsConnectOptions, NatsWorkQueuesConnectionOptions {}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/**
 * Work queues on NATS JetStream: cluster mode's backend. Each queue is a
 * file-backed stream with work-queue retention (an item is deleted when
 * acked) and one durable pull consumer that every handle in every process
 * shares, so each item goes to one consumer at a time. Works on nats-server
 * 2.9 (no priority groups, no consumer pause, no per-message TTL needed).
 *
 * The consumer's `max_deliver` is left unlimited and `maxDeliver` is enforced
 * here instead: a delivery beyond it is terminated (`+TERM`, which removes the
 * item from a work-queue stream) and logged, rather than left stuck unacked in
 * the stream where it would count towards `depth()` forever.
 *
 * Stream and consumer live on the server's disk: after a nats-server restart
 * the connection reconnects and handles keep dequeuing from the same consumer.
 */
export class NatsWorkQueues implements WorkQueues {
  readonly kind = "nats" as const;
  private readonly logger: Logger;
  private readonly apiTimeoutMs: number;
  private readonly handles = new Set<NatsWorkQueue<unknown>>();
  private manager: Promise<JetStreamManager> | undefined;
  private readonly client: JetStreamClient;
  private closed = false;

  private constructor(
    readonly connection: NatsConnection,
    options: NatsWorkQueuesConnectionOptions,
    private readonly owned: { monitorDone: Promise<void> } | undefined,
  ) {
    this.logger = options.logger ?? silentLogger;
    this.apiTimeoutMs = options.apiTimeoutMs ?? 5_000;
    if (!Number.isInteger(this.apiTimeoutMs) || this.apiTimeoutMs < 1) {
      throw new TdistError(
        "invalid_option",
        `apiTimeoutMs must be a positive integer (ms), got ${String(options.apiTimeoutMs)}`,
      );
    }
    this.client = jetstream(connection, { timeout: this.apiTimeoutMs });
  }

  /** Connects to NATS; the returned object owns (and on `close()` drains) the connection. */
  static async connect(options: NatsWorkQueuesOptions): Promise<NatsWorkQueues> {
    const { connection, monitorDone } = await connectNats(options);
    try {
      return new NatsWorkQueues(connection, options, { monitorDone });
    } catch (err) {
      await connection.close();
      throw err;
    }
  }

  /** Work queues over a connection the caller owns (shared with the event plane); `close()` leaves it open. */
  static fromConnection(connection: NatsConnection, options: NatsWorkQueuesConnectionOptions = {}): NatsWorkQueues {
    return new NatsWorkQueues(connection, options, undefined);
  }

  /** Creates the queue's stream and durable consumer if missing (idempotent, safe to race), then opens a handle. */
  async open<T = unknown>(name: string, options?: WorkQueueOptions): Promise<WorkQueue<T>> {
    if (this.closed) throw new TdistError("shutting_down", "work queues are closed");
    const names = natsWorkQueueNames(name);
    const resolved = resolveWorkQueueOptions(options);
    let consumer: Consumer;
    try {
      const manager = await this.jetstreamManager();
      await this.ensureStream(manager, names.stream, names.subject);
      await this.ensureConsumer(manager, names.stream, names.durable, resolved);
      consumer = await this.client.consumers.get(names.stream, names.durable);
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `cannot open work queue ${name}`);
    }
    if (this.closed) throw new TdistError("shutting_down", "work queues are closed");
    const handle = new NatsWorkQueue<T>({
      name,
      ...names,
      options: resolved,
      connection: this.connection,
      client: this.client,
      manager: () => this.jetstreamManager(),
      consumer,
      logger: this.logger.child({ queue: name }),
      apiTimeoutMs: this.apiTimeoutMs,
      onClose: () => this.handles.delete(handle as NatsWorkQueue<unknown>),
    });
    this.handles.add(handle as NatsWorkQueue<unknown>);
    return handle;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.handles].map((handle) => handle.close()));
    if (this.owned) {
      await drainNats(this.connection);
      await this.owned.monitorDone;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private jetstreamManager(): Promise<JetStreamManager> {
    if (!this.manager) {
      const created = jetstreamManager(this.connection, { timeout: this.apiTimeoutMs });
      // A failed attempt (server restarting) is retried by the next caller.
      created.catch(() => {
        if (this.manager === created) this.manager = undefined;
      });
      this.manager = created;
    }
    return this.manager;
  }

  private async ensureStream(manager: JetStreamManager, stream: string, subject: string): Promise<void> {
    try {
      const info = await manager.streams.info(stream);
      if (info.config.retention !== RetentionPolicy.Workqueue) {
        throw new TdistError(
          "bad_request",
          `stream ${stream} exists with retention ${info.config.retention}, not workqueue; delete it or rename the queue`,
        );
      }
      return;
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
    }
    await manager.streams.add({
      name: stream,
      subjects: [subject],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
    });
  }

  private async ensureConsumer(
    manager: JetStreamManager,
    stream: string,
    durable: string,
    options: ResolvedWorkQueueOptions,
  ): Promise<void> {
    const ackWait = nanos(options.ackWaitMs);
    try {
      const info = await manager.consumers.info(stream, durable);
      if (info.config.ack_wait !== ackWait) {
        this.logger.info({ stream, ackWaitMs: options.ackWaitMs }, "updating work queue ack wait");
        await manager.consumers.update(stream, durable, { ack_wait: ackWait });
      }
      return;
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
    }
    const config: Partial<ConsumerConfig> = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: ackWait,
      // Enforced client-side (see the class comment), so the server never strands an item.
      max_deliver: -1,
    };
    await manager.consumers.add(stream, config);
  }
}

interface NatsWorkQueueParts {
  name: string;
  stream: string;
  subject: string;
  durable: string;
  options: ResolvedWorkQueueOptions;
  connection: NatsConnection;
  client: JetStreamClient;
  manager: () => Promise<JetStreamManager>;
  consumer: Consumer;
  logger: Logger;
  apiTimeoutMs: number;
  onClose: () => void;
}

/** One handle on a JetStream work queue; see {@link NatsWorkQueues}. */
export class NatsWorkQueue<T> implements WorkQueue<T> {
  readonly name: string;
  private readonly parts: NatsWorkQueueParts;
  private readonly closing = new AbortController();

  constructor(parts: NatsWorkQueueParts) {
    this.parts = parts;
    this.name = parts.name;
  }

  async enqueue(item: T): Promise<void> {
    this.assertOpen();
    const { client, subject, stream } = this.parts;
    const data = encodeJson(`work queue ${this.name}`, item);
    try {
      await client.publish(subject, data, { expect: { streamName: stream } });
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `enqueue on work queue ${this.name} failed`);
    }
  }

  /**
   * Waits for one message as a series of single-message pulls of at most 5 s.
   * A pull is `consumer.fetch({ max_messages: 1, expires })`, which is exactly
   * what `consumer.next()` runs, called directly so the pull can be stopped:
   * when the signal aborts, the handle closes or a sub-second timeout passes,
   * the pull's inbox is unsubscribed, so the server drops the waiting request
   * and delivers nothing more to it (a message already on its way is nak'd
   * straight back). With one message per pull, the "fetch waits its full
   * expires" caveat does not apply. Pull errors while the server restarts are
   * retried until the deadline.
   */
  async dequeue(options: DequeueOptions = {}): Promise<WorkItem<T> | undefined> {
    this.assertOpen();
    validateDequeueTimeout(options.timeoutMs);
    const { signal } = options;
    if (signal?.aborted) throw toAbortError(signal.reason);
    const deadline = options.timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.timeoutMs;
    const interrupts = [abortPromise(this.closing.signal), ...(signal ? [abortPromise(signal)] : [])];
    const interrupted = Promise.race(interrupts.map((i) => i.promise));
    interrupted.catch(() => {});
    let retryMs = 100;
    let failures = 0;
    try {
      for (;;) {
        this.throwIfInterrupted(signal);
        const remaining = deadline - Date.now();
        if (remaining <= 0) return undefined;
        const expires = Math.max(MIN_PULL_MS, Math.min(remaining, MAX_PULL_MS));
        let message: JsMsg | null;
        try {
          message = await this.pullOne(expires, remaining < expires ? remaining : undefined, signal);
        } catch (err) {
          this.throwIfInterrupted(signal);
          failures++;
          // Failures are routine while the server restarts; only a lasting streak is worth a warning.
          if (failures === 5) this.parts.logger.warn({ err, failures }, "work queue pulls keep failing; retrying");
          else this.parts.logger.debug({ err, failures }, "work queue pull failed; retrying");
          const wait = Math.min(retryMs, Math.max(0, deadline - Date.now()));
          retryMs = Math.min(retryMs * 2, 2_000);
          await Promise.race([delay(wait), interrupted]);
          continue;
        }
        retryMs = 100;
        failures = 0;
        if (message === null) continue;
        if (this.closing.signal.aborted || signal?.aborted) {
          settle(() => message.nak());
          this.throwIfInterrupted(signal);
        }
        const item = this.accept(message);
        if (item) return item;
      }
    } finally {
      for (const interrupt of interrupts) interrupt.dispose();
    }
  }

  /** Items not yet acked: the stream's message count (a work-queue stream deletes acked items). */
  async depth(): Promise<number> {
    this.assertOpen();
    try {
      const manager = await this.parts.manager();
      const info = await manager.streams.info(this.parts.stream);
      return info.state.messages;
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `depth of work queue ${this.name} failed`);
    }
  }

  async close(): Promise<void> {
    if (this.closing.signal.aborted) return;
    this.closing.abort(new TdistError("shutting_down", `work queue ${this.name} handle closed`));
    this.parts.onClose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private accept(message: JsMsg): WorkItem<T> | undefined {
    const { logger, options } = this.parts;
    const deliveryCount = message.info.deliveryCount;
    if (deliveryCount > options.maxDeliver) {
      logger.warn(
        { item: String(message.seq), deliveries: deliveryCount - 1 },
        "dropping work item that reached maxDeliver",
      );
      settle(() => message.term());
      return undefined;
    }
    let payload: T;
    try {
      payload = JSON.parse(message.string()) as T;
    } catch (err) {
      logger.error({ item: String(message.seq), err }, "dropping work item that is not valid JSON");
      settle(() => message.term());
      return undefined;
    }
    return new NatsWorkItem<T>(message, payload, this.parts.connection, this.parts.apiTimeoutMs, this.name);
  }

  /**
   * One single-message pull; resolves `null` when it expires or is stopped
   * (signal, close, or `stopAfterMs`) without a message.
   */
  private async pullOne(expires: number, stopAfterMs: number | undefined, signal?: AbortSignal): Promise<JsMsg | null> {
    const messages = await this.parts.consumer.fetch({ max_messages: 1, expires });
    const stop = (): void => messages.stop();
    const timer = stopAfterMs === undefined ? undefined : setTimeout(stop, stopAfterMs);
    let stopped = false;
    const onStop = (): void => {
      stopped = true;
      stop();
    };
    this.closing.signal.addEventListener("abort", onStop, { once: true });
    signal?.addEventListener("abort", onStop, { once: true });
    // Either may have fired while the pull was being set up.
    if (this.closing.signal.aborted || signal?.aborted) onStop();
    try {
      for await (const message of messages) {
        if (stopped) {
          // Delivered before the server saw the unsubscribe: hand it straight back.
          settle(() => message.nak());
          continue;
        }
        return message;
      }
      return null;
    } finally {
      clearTimeout(timer);
      this.closing.signal.removeEventListener("abort", onStop);
      signal?.removeEventListener("abort", onStop);
    }
  }

  private throwIfInterrupted(signal: AbortSignal | undefined): void {
    if (this.closing.signal.aborted) throw this.closing.signal.reason;
    if (signal?.aborted) throw toAbortError(signal.reason);
  }

  private assertOpen(): void {
    if (this.closing.signal.aborted) {
      throw new TdistError("shutting_down", `work queue ${this.name} handle is closed`);
    }
  }
}

class NatsWorkItem<T> implements WorkItem<T> {
  readonly deliveryCount: number;
  readonly id: string;

  constructor(
    private readonly message: JsMsg,
    readonly payload: T,
    private readonly connection: NatsConnection,
    private readonly apiTimeoutMs: number,
    private readonly queue: string,
  ) {
    this.deliveryCount = message.info.deliveryCount;
    this.id = String(message.seq);
  }

  /** Waits for the server to confirm the ack, so `depth()` reflects it afterwards. */
  async ack(): Promise<void> {
    try {
      await this.message.ackAck({ timeout: this.apiTimeoutMs });
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `ack of item ${this.id} on work queue ${this.queue} failed`);
    }
  }

  async nak(delayMs = 0): Promise<void> {
    validateNakDelay(delayMs);
    await this.respond("nak", () => this.message.nak(delayMs > 0 ? Math.ceil(delayMs) : undefined));
  }

  async inProgress(): Promise<void> {
    await this.respond("inProgress", () => this.message.working());
  }

  private async respond(what: string, send: () => void): Promise<void> {
    try {
      send();
      await this.connection.flush();
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `${what} of item ${this.id} on work queue ${this.queue} failed`);
    }
  }
}

/** Runs a fire-and-forget ack-type reply, ignoring a closed connection (the ack wait covers it). */
function settle(send: () => void): void {
  try {
    send();
  } catch {
    // The connection is gone; the server redelivers after the ack wait.
  }
}
