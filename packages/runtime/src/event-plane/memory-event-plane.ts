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
import { SubjectPattern, validatePublishSubject, validateQueueGroup } from "./event-subjects.js";
import { encodeJson } from "./json-payload.js";

interface BusSubscriber {
  readonly pattern: SubjectPattern;
  readonly queueGroup: string | undefined;
  readonly subscription: BufferedSubscription<unknown>;
}

/**
 * The shared state behind the memory event plane. Runtimes in one process
 * given the same bus see each other's events, as processes sharing a NATS
 * server would. Delivery is synchronous into each subscriber's bounded buffer.
 */
export class MemoryEventBus {
  private static sharedBus: MemoryEventBus | undefined;
  private readonly subscribers = new Set<BusSubscriber>();
  private queueGroupCursor = 0;

  /** The process-wide bus that event planes use when given no other. */
  static shared(): MemoryEventBus {
    MemoryEventBus.sharedBus ??= new MemoryEventBus();
    return MemoryEventBus.sharedBus;
  }

  add(subscriber: BusSubscriber): void {
    this.subscribers.add(subscriber);
  }

  remove(subscriber: BusSubscriber): void {
    this.subscribers.delete(subscriber);
  }

  /**
   * Delivers `data` (JSON text) to every matching plain subscriber and to one
   * member of each matching queue group. Groups are keyed by name alone, as in
   * NATS, and members are picked round-robin. Each subscriber decodes its own
   * copy, so one cannot mutate another's payload.
   */
  publish(subject: string, data: string): void {
    let groups: Map<string, BusSubscriber[]> | undefined;
    for (const subscriber of this.subscribers) {
      if (!subscriber.pattern.matches(subject)) continue;
      if (subscriber.queueGroup === undefined) {
        subscriber.subscription.push({ subject, payload: JSON.parse(data) });
        continue;
      }
      groups ??= new Map();
      const members = groups.get(subscriber.queueGroup);
      if (members) members.push(subscriber);
      else groups.set(subscriber.queueGroup, [subscriber]);
    }
    if (!groups) return;
    for (const members of groups.values()) {
      this.queueGroupCursor = (this.queueGroupCursor + 1) >>> 0;
      const chosen = members[this.queueGroupCursor % members.length] as BusSubscriber;
      chosen.subscription.push({ subject, payload: JSON.parse(data) });
    }
  }
}

export interface MemoryEventPlaneOptions extends EventPlaneOptions {
  /** The bus to share; defaults to the process-wide one. */
  bus?: MemoryEventBus;
  logger?: Logger;
}

/**
 * The in-process event plane: embedded mode's backend. Payloads go through
 * JSON exactly as on NATS, so embedded mode catches what cluster mode would
 * reject (non-serialisable payloads, shared mutable objects).
 */
export class MemoryEventPlane implements EventPlane {
  readonly kind = "memory" as const;
  readonly bus: MemoryEventBus;
  private readonly logger: Logger;
  private readonly maxBufferedEvents: number;
  private readonly open = new Set<BufferedSubscription<unknown>>();
  private closed = false;

  constructor(options: MemoryEventPlaneOptions = {}) {
    this.bus = options.bus ?? MemoryEventBus.shared();
    this.logger = options.logger ?? silentLogger;
    this.maxBufferedEvents = resolveMaxBuffered(
      "maxBufferedEvents",
      options.maxBufferedEvents,
      DEFAULT_MAX_BUFFERED_EVENTS,
    );
  }

  async publish<T>(subject: string, payload: T): Promise<void> {
    this.assertOpen();
    validatePublishSubject(subject);
    this.bus.publish(subject, encodeJson(subject, payload));
  }

  subscribe<T>(subject: string, options: SubscribeOptions = {}): EventSubscription<T> {
    this.assertOpen();
    const pattern = new SubjectPattern(subject);
    const queueGroup = options.queueGroup === undefined ? undefined : validateQueueGroup(options.queueGroup);
    const maxBuffered = resolveMaxBuffered("maxBuffered", options.maxBuffered, this.maxBufferedEvents);
    const subscription: BufferedSubscription<unknown> = new BufferedSubscription<unknown>(subject, maxBuffered, {
      ...(options.signal ? { signal: options.signal } : {}),
      onClose: () => {
        this.bus.remove(subscriber);
        this.open.delete(subscription);
      },
      onDrop: (dropped) => {
        if (dropped === 1)
          this.logger.warn({ subject, maxBuffered }, "event subscriber too slow, dropping oldest events");
      },
    });
    const subscriber: BusSubscriber = { pattern, queueGroup, subscription };
    this.open.add(subscription);
    this.bus.add(subscriber);
    return subscription.start() as BufferedSubscription<T>;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const subscription of [...this.open]) subscription.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new TdistError("shutting_down", "event plane is closed");
  }
}
