import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { TdistError } from "../errors/tdist-error.js";
import { type Logger, silentLogger } from "../logger.js";
import { BufferedSubscription } from "./buffered-subscription.js";
import {
  DEFAULT_MAX_BUFFERED_EVENTS,
  type EventPlane,
  type EventPlaneOptions,
  type EventSubscription,
  resolveMaxBuffered,
  type SubscribeOptions,
} from "./event-plane.js";
import { validatePublishSubject, validateQueueGroup, validateSubscribeSubject } from "./event-subjects.js";
import { encodeJson } from "./json-payload.js";
import { connectNats, drainNats, type NatsConnectOptions } from "./nats-connection.js";

export interface NatsEventPlaneOptions extends NatsConnectOptions, EventPlaneOptions {}

export interface NatsEventPlaneConnectionOptions extends EventPlaneOptions {
  logger?: Logger;
}

/**
 * The event plane on core NATS subjects: cluster mode's backend. Subjects map
 * one to one onto NATS subjects and queue groups onto NATS queue groups.
 *
 * The connection reconnects forever; subscriptions survive a nats-server
 * restart (the client re-subscribes on reconnect) and keep yielding events
 * published after it. Events published while a subscriber was disconnected
 * are lost (core NATS is at most once).
 *
 * ```ts
 * await using plane = await NatsEventPlane.connect({ url: "nats://127.0.0.1:4222", logger });
 * ```
 */
export class NatsEventPlane implements EventPlane {
  readonly kind = "nats" as const;
  private readonly logger: Logger;
  private readonly maxBufferedEvents: number;
  private readonly open = new Set<BufferedSubscription<unknown>>();
  private closed = false;

  private constructor(
    readonly connection: NatsConnection,
    options: NatsEventPlaneConnectionOptions,
    private readonly owned: { monitorDone: Promise<void> } | undefined,
  ) {
    this.logger = options.logger ?? silentLogger;
    this.maxBufferedEvents = resolveMaxBuffered(
      "maxBufferedEvents",
      options.maxBufferedEvents,
      DEFAULT_MAX_BUFFERED_EVENTS,
    );
  }

  /** Connects to NATS and returns a plane that owns (and on `close()` drains) the connection. */
  static async connect(options: NatsEventPlaneOptions): Promise<NatsEventPlane> {
    resolveMaxBuffered("maxBufferedEvents", options.maxBufferedEvents, DEFAULT_MAX_BUFFERED_EVENTS);
    const { connection, monitorDone } = await connectNats(options);
    return new NatsEventPlane(connection, options, { monitorDone });
  }

  /** A plane over a connection the caller owns (shared with work queues); `close()` leaves it open. */
  static fromConnection(connection: NatsConnection, options: NatsEventPlaneConnectionOptions = {}): NatsEventPlane {
    return new NatsEventPlane(connection, options, undefined);
  }

  async publish<T>(subject: string, payload: T): Promise<void> {
    this.assertOpen();
    validatePublishSubject(subject);
    const data = encodeJson(subject, payload);
    try {
      this.connection.publish(subject, data);
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `publish to ${subject} failed`);
    }
  }

  subscribe<T>(subject: string, options: SubscribeOptions = {}): EventSubscription<T> {
    this.assertOpen();
    validateSubscribeSubject(subject);
    const queue = options.queueGroup === undefined ? undefined : validateQueueGroup(options.queueGroup);
    const maxBuffered = resolveMaxBuffered("maxBuffered", options.maxBuffered, this.maxBufferedEvents);
    let natsSubscription: Subscription | undefined;
    let markReady: () => void = () => {};
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    const subscription: BufferedSubscription<unknown> = new BufferedSubscription<unknown>(subject, maxBuffered, {
      ready,
      ...(options.signal ? { signal: options.signal } : {}),
      onClose: () => {
        this.open.delete(subscription);
        try {
          natsSubscription?.unsubscribe();
        } catch {
          // Already closed with its connection.
        }
      },
      onDrop: (dropped) => {
        if (dropped === 1)
          this.logger.warn({ subject, maxBuffered }, "event subscriber too slow, dropping oldest events");
      },
    });
    try {
      natsSubscription = this.connection.subscribe(subject, {
        ...(queue === undefined ? {} : { queue }),
        callback: (err, msg) => {
          if (err) {
            subscription.fail(TdistError.wrap(err, "event_plane_error", `subscription to ${subject} failed`));
            return;
          }
          let payload: unknown;
          try {
            payload = msg.json();
          } catch (parseError) {
            this.logger.warn({ subject: msg.subject, err: parseError }, "dropping event that is not valid JSON");
            return;
          }
          subscription.push({ subject: msg.subject, payload });
        },
      });
    } catch (err) {
      throw TdistError.wrap(err, "event_plane_error", `subscribe to ${subject} failed`);
    }
    // A flush round trip sent after the SUB proves the server has processed it.
    this.connection.flush().then(markReady, markReady);
    natsSubscription.closed
      .then((err) => {
        if (err) subscription.fail(TdistError.wrap(err, "event_plane_error", `subscription to ${subject} failed`));
        else subscription.close();
      })
      .catch(() => subscription.close());
    this.open.add(subscription);
    return subscription.start() as BufferedSubscription<T>;
  }

  /** Ends every subscription; drains the connection when this plane owns it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const subscription of [...this.open]) subscription.close();
    if (this.owned) {
      await drainNats(this.connection);
      await this.owned.monitorDone;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new TdistError("shutting_down", "event plane is closed");
  }
}
