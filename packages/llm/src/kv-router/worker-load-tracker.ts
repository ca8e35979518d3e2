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

function isLoadMetrics(value: unknown): value is WorkerLoadMetrics {
  const m = value as Partial<WorkerLoadMetrics> | null;
  return (
    typeof m === "object" &&
    m !== null &&
    typeof m.workerId === "string" &&
    typeof m.activeSequences === "number" &&
    typeof m.waitingSequences === "number" &&
    typeof m.activeKvBlocks === "number" &&
    typeof m.totalKvBlocks === "number" &&
    typeof m.kvUsage === "number" &&
    typeof m.prefillTokensQueued === "number"
  );
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
