import { type Logger, silentLogger } from "@tdist/runtime";
import type { KvCacheEvent, KvCacheEventData } from "./kv-events.js";

/** Where an engine sends its events: the runtime's `EventPlane` satisfies it as it is. */
export interface KvEventPublisher {
  publish(subject: string, payload: unknown): Promise<void>;
}

/**
 * One worker's KV event stream: numbers events (one id per event, from 0,
 * so the router's indexer detects a gap) and publishes them in order. A
 * failed publish is logged and its id stays spent: the indexer sees the gap
 * and resynchronises the worker instead of scoring it on a partial view.
 */
export class KvEventSink {
  readonly workerId: string;
  readonly subject: string;
  readonly #publisher: KvEventPublisher;
  readonly #logger: Logger;
  #nextEventId = 0;
  #tail: Promise<void> = Promise.resolve();

  constructor(options: { workerId: string; publisher: KvEventPublisher; subject: string; logger?: Logger }) {
    this.workerId = options.workerId;
    this.subject = options.subject;
    this.#publisher = options.publisher;
    this.#logger = options.logger ?? silentLogger;
  }

  /** Ids handed out so far (the next event's id). */
  get nextEventId(): number {
    return this.#nextEventId;
  }

  /**
   * Numbers `events` now and publishes them after everything published
   * before; resolves once they are out (or failed and were logged). Never rejects.
   */
  publish(events: readonly KvCacheEventData[]): Promise<void> {
    if (events.length === 0) return this.#tail;
    const numbered: KvCacheEvent[] = events.map((data) => ({
      workerId: this.workerId,
      eventId: this.#nextEventId++,
      data,
    }));
    this.#tail = this.#tail.then(async () => {
      for (const event of numbered) {
        try {
          await this.#publisher.publish(this.subject, event);
        } catch (err) {
          this.#logger.warn({ err, workerId: this.workerId, eventId: event.eventId }, "publishing a KV event failed");
        }
      }
    });
    return this.#tail;
  }
}
