import { type EventPlane, eventSubject, type Logger, silentLogger } from "@tdist/runtime";
import { MAX_BLOCKS_PER_KV_EVENT } from "../kv/kv-event-validation.js";

/** Topic (under the workers' component) on which router replicas share active-sequence changes. */
export const ROUTER_ACTIVE_SEQUENCES_TOPIC = "kv-router-active";

/** One change to a replica's active sequences, as Dynamo's AddRequest / MarkPrefillCompleted / Free. */
export type ActiveSequenceEvent =
  | {
      type: "add";
      routerId: string;
      requestId: string;
      workerId: string;
      blockHashes: string[];
      prefillTokens: number;
    }
  | { type: "prefill_done"; routerId: string; requestId: string }
  | { type: "free"; routerId: string; requestId: string };

function isActiveSequenceEvent(value: unknown): value is ActiveSequenceEvent {
  const event = value as Partial<ActiveSequenceEvent> | null;
  if (typeof event !== "object" || event === null) return false;
  if (typeof event.routerId !== "string" || typeof event.requestId !== "string") return false;
  if (event.type === "prefill_done" || event.type === "free") return true;
  if (event.type !== "add") return false;
  const add = event as Partial<Record<string, unknown>>;
  // A NaN or negative load would make every later cost comparison false and skew routing for good.
  if (typeof add.prefillTokens !== "number" || !Number.isFinite(add.prefillTokens) || add.prefillTokens < 0) {
    return false;
  }
  const hashes = add.blockHashes;
  return (
    typeof add.workerId === "string" &&
    Array.isArray(hashes) &&
    hashes.length <= MAX_BLOCKS_PER_KV_EVENT &&
    hashes.every((hash) => typeof hash === "string")
  );
}

/**
 * Shares active-sequence changes between router replicas over the event
 * plane (fire and forget), so that two frontends routing to the same workers
 * see each other's in-flight requests and do not both pick the worker that
 * looked idle to each. Each replica ignores its own events (by `routerId`).
 * Only the ephemeral load is shared: cached blocks come to every replica
 * from the workers' KV events themselves.
 */
export class ReplicaSync {
  readonly subject: string;
  private readonly logger: Logger;

  constructor(
    private readonly plane: EventPlane,
    namespace: string,
    component: string,
    readonly routerId: string,
    options: { logger?: Logger } = {},
  ) {
    this.subject = eventSubject(namespace, component, ROUTER_ACTIVE_SEQUENCES_TOPIC);
    this.logger = options.logger ?? silentLogger;
  }

  /** Publishes a change; failures are logged, never thrown (a replica's view is best effort). */
  publish(event: ActiveSequenceEvent): void {
    this.plane.publish(this.subject, event).catch((err: unknown) => {
      this.logger.warn({ err, subject: this.subject }, "cannot publish a router replica event");
    });
  }

  /**
   * Applies other replicas' changes until `signal` aborts. Resolves once the
   * subscription is registered; `done` settles when it ends.
   */
  async start(onEvent: (event: ActiveSequenceEvent) => void, signal: AbortSignal): Promise<{ done: Promise<void> }> {
    const subscription = this.plane.subscribe<ActiveSequenceEvent>(this.subject, { signal });
    await subscription.ready;
    const done = (async () => {
      for await (const { payload } of subscription) {
        if (!isActiveSequenceEvent(payload) || payload.routerId === this.routerId) continue;
        try {
          onEvent(payload);
        } catch (err) {
          // One replica's odd event must not end the sync: later ones still apply.
          this.logger.warn({ err, subject: this.subject }, "cannot apply a router replica event");
        }
      }
    })().catch((err: unknown) => this.logger.warn({ err, subject: this.subject }, "router replica sync failed"));
    return { done };
  }
}
