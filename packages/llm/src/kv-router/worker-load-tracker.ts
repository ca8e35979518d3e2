import {
  EVENT_SUBJECT_ROOT,
  type EventPlane,
  eventSubject,
  type Logger,
  silentLogger,
  validateName,
} from "@tdist/runtime";
import { LOAD_METRICS_TOPIC, type WorkerLoadMetrics } from "../kv/kv-events.js";

/** The subject of a component's load metrics, or the wildcard over every component of the namespace. */
export function loadMetricsSubject(namespace: string, component?: string): string {
  if (component !== undefined) return eventSubject(namespace, component, LOAD_METRICS_TOPIC);
  return `${EVENT_SUBJECT_ROOT}.${validateName("namespace", namespace)}.*.${LOAD_METRICS_TOPIC}`;
}

const LOAD_FIELDS = [
  "activeSequences",
  "waitingSequences",
  "activeKvBlocks",
  "totalKvBlocks",
  "kvUsage",
  "prefillTokensQueued",
] as const;

function isLoadMetrics(value: unknown): value is WorkerLoadMetrics {
  const m = value as Partial<Record<string, unknown>> | null;
  if (typeof m !== "object" || m === null || typeof m.workerId !== "string") return false;
  // JSON carries 1e999 as Infinity; it and negatives would poison the busy check and the capacity.
  return LOAD_FIELDS.every((field) => {
    const n = m[field];
    return typeof n === "number" && Number.isFinite(n) && n >= 0;
  });
}

/**
 * The latest load each worker reported (engines publish `WorkerLoadMetrics`
 * when their load changes, so the latest report stays true while they are
 * idle). Schedulers read it beside their own predictions.
 *
 * ```ts
 * const loads = new WorkerLoadTracker();
 * await loads.subscribe(plane, loadMetricsSubject("tdist", "backend"), signal);
 * loads.get(workerId)?.kvUsage;
 * ```
 */
export class WorkerLoadTracker {
  private readonly latest = new Map<string, WorkerLoadMetrics>();
  private readonly logger: Logger;

  constructor(options: { logger?: Logger } = {}) {
    this.logger = options.logger ?? silentLogger;
  }

  update(metrics: WorkerLoadMetrics): void {
    if (!isLoadMetrics(metrics)) {
      this.logger.debug({ metrics }, "ignoring malformed load metrics");
      return;
    }
    this.latest.set(metrics.workerId, metrics);
  }

  get(workerId: string): WorkerLoadMetrics | undefined {
    return this.latest.get(workerId);
  }

  remove(workerId: string): void {
    this.latest.delete(workerId);
  }

  /**
   * Follows `subject` on `plane` until `signal` aborts; resolves once the
   * subscription is registered (events published after that are seen).
   * Returns the loop's promise, which settles when the subscription ends.
   */
  async subscribe(plane: EventPlane, subject: string, signal: AbortSignal): Promise<{ done: Promise<void> }> {
    const subscription = plane.subscribe<WorkerLoadMetrics>(subject, { signal });
    await subscription.ready;
    const done = (async () => {
      for await (const { payload } of subscription) this.update(payload);
    })().catch((err: unknown) => this.logger.warn({ err, subject }, "load metrics subscription failed"));
    return { done };
  }
}
