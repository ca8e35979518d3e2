import {
  EVENT_SUBJECT_ROOT,
  type EventSubscription,
  eventSubject,
  type MemoryEventBus,
  MemoryEventPlane,
  TdistError,
  validateName,
} from "@tdist/runtime";
import { kvEventProblem } from "../kv/kv-event-validation.js";
import { KV_EVENTS_TOPIC, type KvCacheEvent } from "../kv/kv-events.js";

/**
 * The subject of a component's KV events, or with no component the
 * wildcard over every component of the namespace (`tdist.ns.{ns}.*.kv-events`).
 */
export function kvEventsSubject(namespace: string, component?: string): string {
  if (component !== undefined) return eventSubject(namespace, component, KV_EVENTS_TOPIC);
  return `${EVENT_SUBJECT_ROOT}.${validateName("namespace", namespace)}.*.${KV_EVENTS_TOPIC}`;
}

export const DEFAULT_HISTORY_EVENTS = 100_000;
export const DEFAULT_HISTORY_BLOCKS = 1_000_000;

function blocksOf(event: KvCacheEvent): number {
  const data = event?.data;
  if (data?.type === "stored" && Array.isArray(data.blocks)) return data.blocks.length;
  if (data?.type === "removed" && Array.isArray(data.blockHashes)) return data.blockHashes.length;
  return 1;
}

/**
 * Embedded mode's stand-in for the JetStream event stream: the most recent
 * KV events on one subject of one memory bus (bounded by event count and by
 * the blocks they carry), recorded by a process-wide subscription of its own
 * so it outlives the runtimes that read it. A router that starts, or
 * restarts, in the process replays it to start warm. Events older than the
 * window are gone; the indexer's per-worker event ids then start from the
 * first event it sees.
 *
 * ```ts
 * const history = MemoryKvEventHistory.forBus(plane.bus, kvEventsSubject("tdist", "backend"));
 * for (const event of history.events()) indexer.applyEvent(event);
 * ```
 */
export class MemoryKvEventHistory {
  private static readonly registry = new WeakMap<MemoryEventBus, Map<string, MemoryKvEventHistory>>();
  private queue: KvCacheEvent[] = [];
  private head = 0;
  private blocks = 0;
  private readonly plane: MemoryEventPlane;
  private readonly subscription: EventSubscription<KvCacheEvent>;
  private readonly loop: Promise<void>;

  private constructor(
    private readonly bus: MemoryEventBus,
    readonly subject: string,
    readonly maxEvents: number,
    readonly maxBlocks: number,
  ) {
    this.plane = new MemoryEventPlane({ bus, maxBufferedEvents: Math.max(maxEvents, 10_000) });
    const subscription = this.plane.subscribe<KvCacheEvent>(subject);
    this.subscription = subscription;
    this.loop = (async () => {
      // Malformed events are not kept: the live routers already counted them, and a replay would only count them again.
      for await (const { payload } of subscription) if (kvEventProblem(payload) === undefined) this.push(payload);
    })();
  }

  /** The history of `subject` on `bus`, started on first use (its bounds are fixed then). */
  static forBus(
    bus: MemoryEventBus,
    subject: string,
    bounds: { maxEvents?: number; maxBlocks?: number } = {},
  ): MemoryKvEventHistory {
    const maxEvents = bounds.maxEvents ?? DEFAULT_HISTORY_EVENTS;
    const maxBlocks = bounds.maxBlocks ?? DEFAULT_HISTORY_BLOCKS;
    for (const [name, value] of Object.entries({ maxEvents, maxBlocks })) {
      if (!Number.isInteger(value) || value < 1) {
        throw new TdistError("invalid_option", `history ${name} must be a positive integer, got ${String(value)}`);
      }
    }
    let bySubject = MemoryKvEventHistory.registry.get(bus);
    if (bySubject === undefined) {
      bySubject = new Map();
      MemoryKvEventHistory.registry.set(bus, bySubject);
    }
    let history = bySubject.get(subject);
    if (history === undefined) {
      history = new MemoryKvEventHistory(bus, subject, maxEvents, maxBlocks);
      bySubject.set(subject, history);
    }
    return history;
  }

  /** Events recorded, oldest first. */
  events(): KvCacheEvent[] {
    return this.queue.slice(this.head);
  }

  get size(): number {
    return this.queue.length - this.head;
  }

  /** Stops recording and forgets the history (tests; a process normally keeps it). */
  async close(): Promise<void> {
    const bySubject = MemoryKvEventHistory.registry.get(this.bus);
    if (bySubject?.get(this.subject) === this) bySubject.delete(this.subject);
    this.subscription.close();
    await this.plane.close();
    await this.loop;
  }

  private push(event: KvCacheEvent): void {
    this.queue.push(event);
    this.blocks += blocksOf(event);
    while (this.size > this.maxEvents || (this.blocks > this.maxBlocks && this.size > 1)) {
      this.blocks -= blocksOf(this.queue[this.head] as KvCacheEvent);
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}
