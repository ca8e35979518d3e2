import { TdistError } from "../errors/tdist-error.js";

/**
 * The event plane seam: fire-and-forget pub/sub of JSON payloads on
 * NATS-style subjects (KV events, load metrics). `memory` serves embedded mode
 * (several runtimes in one process can share one bus); `nats` (core NATS
 * subjects) serves cluster mode.
 *
 * Delivery is at most once: a subscriber only sees events published after its
 * subscription is `ready`, nothing is replayed after a disconnect, and a slow
 * subscriber loses its oldest buffered events (see {@link EventSubscription}).
 * Consumers that need every event (the KV indexer) detect gaps themselves from
 * per-publisher event ids and resynchronise.
 *
 * ```ts
 * const sub = plane.subscribe<KvEvent>(eventSubject("tdist", "backend", "kv_events"));
 * await sub.ready;
 * for await (const { subject, payload } of sub) index.apply(payload);
 * ```
 */

/** One received event. */
export interface EventMessage<T> {
  /** The concrete subject it was published on (never a wildcard). */
  readonly subject: string;
  /** The decoded JSON payload; each subscriber gets its own copy. */
  readonly payload: T;
}

export interface SubscribeOptions {
  /** Ends the subscription (iteration finishes normally) when it aborts. */
  signal?: AbortSignal;
  /**
   * Subscriptions sharing a queue group name receive each matching event
   * once between them (one member is picked per event), as in NATS.
   */
  queueGroup?: string;
  /**
   * Events buffered for this subscriber before the oldest are dropped;
   * defaults to the plane's `maxBufferedEvents`.
   */
  maxBuffered?: number;
}

/**
 * A subscription: a single-consumer async iterable of events. Iteration ends
 * (done, no error) on `close()`, on its signal, on `break`, or when the plane
 * closes; buffered events are discarded then. It fails with an
 * `event_plane_error` only when the backend refuses the subscription (for
 * example a permissions error).
 *
 * Bounded: when more than `maxBuffered` events wait unread, the oldest is
 * dropped and `dropped` counts it. A slow subscriber therefore sees the most
 * recent events and a gap, never unbounded memory growth, and never slows
 * down publishers or other subscribers.
 */
export interface EventSubscription<T> extends AsyncIterable<EventMessage<T>> {
  /** The subject (possibly with wildcards) this subscription matches. */
  readonly subject: string;
  /**
   * Resolves once the backend has registered the subscription, so events
   * published after it are delivered. Never rejects.
   */
  readonly ready: Promise<void>;
  /** Events dropped so far because the buffer was full. */
  readonly dropped: number;
  /** Events waiting unread in the buffer. */
  readonly buffered: number;
  close(): void;
  [Symbol.dispose](): void;
}

export interface EventPlane {
  readonly kind: "memory" | "nats";
  /**
   * Publishes a JSON-serialisable payload on a concrete subject (no
   * wildcards). Resolves once the event is handed to the backend, not when it
   * is delivered. Throws `codec_error` for a payload JSON cannot encode,
   * `bad_request` for an invalid subject, `shutting_down` after `close()`.
   */
  publish<T>(subject: string, payload: T): Promise<void>;
  /**
   * Subscribes to a subject, which may use NATS wildcards: `*` matches one
   * token, `>` (last token only) matches one or more trailing tokens.
   */
  subscribe<T>(subject: string, options?: SubscribeOptions): EventSubscription<T>;
  /** Ends every subscription of this handle and releases the backend connection. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options shared by every event plane backend. */
export interface EventPlaneOptions {
  /** Default per-subscription buffer bound (events). Default 10 000. */
  maxBufferedEvents?: number;
}

export const DEFAULT_MAX_BUFFERED_EVENTS = 10_000;

/** Validates a buffer bound option (a positive integer), falling back to `fallback`. */
export function resolveMaxBuffered(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new TdistError("invalid_option", `${option} must be a positive integer, got ${String(value)}`);
  }
  return value;
}
