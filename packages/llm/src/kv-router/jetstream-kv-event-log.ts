import {
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { type NatsConnection, nanos } from "@nats-io/transport-node";
import { type Logger, silentLogger, TdistError, validateName } from "@tdist/runtime";
import type { KvCacheEvent } from "../kv/kv-events.js";
import { kvEventsSubject } from "./kv-event-history.js";

export interface JetStreamKvEventLogOptions {
  namespace: string;
  /** The workers' component (the stream captures its KV event subject). */
  component: string;
  /** How long events are kept. Default 1 hour (as Dynamo's router stream). */
  maxAgeMs?: number;
  /** Most events kept; the oldest are discarded past it. Default 1 000 000. */
  maxMessages?: number;
  /** Timeout of JetStream API requests (ms). Default 5 000. */
  apiTimeoutMs?: number;
  logger?: Logger;
}

/** One event read back from the stream with its stream sequence. */
export interface SequencedKvEvent {
  sequence: number;
  /**
   * The message as decoded: a {@link KvCacheEvent} when a worker published
   * it, but anything can be published on the subject, so the consumer
   * checks it (`KvIndexer.applyEvent` does); undefined when it was not JSON.
   */
  event: unknown;
}

/** The stream name for a component's KV events: `TDIST_KV_{namespace}_{component}`. */
export function kvEventStreamName(namespace: string, component: string): string {
  return `TDIST_KV_${validateName("namespace", namespace)}_${validateName("component", component)}`;
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/**
 * Cluster mode's replayable KV event history: a JetStream stream (limits
 * retention: by age and count) bound to the component's KV event subject.
 * Workers keep publishing plain core-NATS events on the event plane; the
 * server stores every one, so a router that starts or restarts replays the
 * stream (from the start, or from the sequence after a snapshot it restored)
 * and continues live from the same ordered consumer: one ordered source, no
 * window between replay and live in which events could be lost. The
 * indexer's per-worker event ids drop any overlap with a restored snapshot.
 *
 * ```ts
 * const log = await JetStreamKvEventLog.open(natsPlane.connection, { namespace: "tdist", component: "backend" });
 * for await (const { sequence, event } of log.events({ fromSequence: 1, signal })) indexer.applyEvent(event);
 * ```
 */
export class JetStreamKvEventLog {
  readonly stream: string;
  readonly subject: string;

  private constructor(
    private readonly connection: NatsConnection,
    private readonly manager: JetStreamManager,
    private readonly apiTimeoutMs: number,
    private readonly logger: Logger,
    options: JetStreamKvEventLogOptions,
  ) {
    this.stream = kvEventStreamName(options.namespace, options.component);
    this.subject = kvEventsSubject(options.namespace, options.component);
  }

  /** Creates the stream if missing (idempotent, safe to race) and returns a handle on it. */
  static async open(connection: NatsConnection, options: JetStreamKvEventLogOptions): Promise<JetStreamKvEventLog> {
    const maxAgeMs = options.maxAgeMs ?? 3_600_000;
    const maxMessages = options.maxMessages ?? 1_000_000;
    const apiTimeoutMs = options.apiTimeoutMs ?? 5_000;
    for (const [name, value] of Object.entries({ maxAgeMs, maxMessages, apiTimeoutMs })) {
      if (!Number.isInteger(value) || value < 1) {
        throw new TdistError("invalid_option", `${name} must be a positive integer, got ${String(value)}`);
      }
    }
    const logger = options.logger ?? silentLogger;
    let manager: JetStreamManager;
    try {
      manager = await jetstreamManager(connection, { timeout: apiTimeoutMs });
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", "JetStream is not available for the KV event stream");
    }
    const log = new JetStreamKvEventLog(connection, manager, apiTimeoutMs, logger, options);
    try {
      await log.ensureStream(maxAgeMs, maxMessages);
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `cannot create KV event stream ${log.stream}`);
    }
    return log;
  }

  /** Sequence of the newest stored event (0 when empty). */
  async lastSequence(): Promise<number> {
    const info = await this.manager.streams.info(this.stream);
    return info.state.last_seq;
  }

  /** Deletes every stored event (a fresh start; other routers' replays lose their history too). */
  async purge(): Promise<void> {
    await this.manager.streams.purge(this.stream);
  }

  /**
   * Events from `fromSequence` (default: the oldest kept) onwards, then live
   * ones as they are stored, until `signal` aborts. Every message is yielded,
   * malformed ones too (the indexer counts and skips them), so the sequence
   * always advances past them. The consumer is ordered and ephemeral: the server forgets it
   * when this iteration ends.
   */
  async *events(options: { fromSequence?: number; signal: AbortSignal }): AsyncGenerator<SequencedKvEvent> {
    const { signal } = options;
    if (signal.aborted) return;
    const client = jetstream(this.connection, { timeout: this.apiTimeoutMs });
    const from = options.fromSequence;
    const consumer = await client.consumers.get(
      this.stream,
      from !== undefined && from > 1
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from }
        : { deliver_policy: DeliverPolicy.All },
    );
    const messages = await consumer.consume();
    const onAbort = (): void => {
      void messages.close();
    };
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      if (signal.aborted) return;
      for await (const message of messages) {
        let event: unknown;
        try {
          event = message.json<unknown>();
        } catch {
          event = undefined;
        }
        yield { sequence: message.seq, event };
        if (signal.aborted) return;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      await messages.close();
    }
  }

  private async ensureStream(maxAgeMs: number, maxMessages: number): Promise<void> {
    try {
      await this.manager.streams.info(this.stream);
      return;
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
    }
    try {
      await this.manager.streams.add({
        name: this.stream,
        subjects: [this.subject],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_age: nanos(maxAgeMs),
        max_msgs: maxMessages,
      });
      this.logger.info({ stream: this.stream, subject: this.subject }, "created the KV event stream");
    } catch (err) {
      // Another router created it meanwhile.
      await this.manager.streams.info(this.stream).catch(() => {
        throw err;
      });
    }
  }
}
