import type { Logger } from "@tdist/runtime";

/** Sources tracked at once; past it, the rest share one line so a flood of invented worker ids cannot grow the map. */
const MAX_TRACKED_SOURCES = 1_024;
const OTHER_SOURCES = "(other)";

interface SourceState {
  loggedAt: number;
  suppressed: number;
}

/**
 * Logs malformed events at most once per source (worker) per interval: the
 * first at once, and the next after the interval with how many were
 * skipped meanwhile. A worker publishing garbage on every step would
 * otherwise write a warning per step.
 *
 * ```ts
 * const warnings = new MalformedEventWarnings(logger, 1_000, () => Date.now());
 * warnings.report(workerId, "blocks[].blockHash");
 * ```
 */
export class MalformedEventWarnings {
  private readonly sources = new Map<string, SourceState>();
  private sweptAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs: number,
    private readonly now: () => number,
    private readonly message = "ignoring malformed KV events",
  ) {}

  /** Counts one malformed event from `source` (undefined: no usable worker id); logs it when the interval allows. */
  report(source: string | undefined, problem: string): void {
    const now = this.now();
    const key = this.keyOf(source ?? "(unknown)", now);
    const state = this.sources.get(key);
    if (state !== undefined && now - state.loggedAt < this.intervalMs) {
      state.suppressed++;
      return;
    }
    // `count` is this one plus those skipped since the last line.
    const count = (state?.suppressed ?? 0) + 1;
    this.sources.set(key, { loggedAt: now, suppressed: 0 });
    this.logger.warn({ workerId: key, problem, count }, this.message);
  }

  private keyOf(source: string, now: number): string {
    if (this.sources.has(source) || this.sources.size < MAX_TRACKED_SOURCES) return source;
    // Sources quiet for an interval with nothing pending are forgotten, at most one sweep per interval.
    if (now - this.sweptAt >= this.intervalMs) {
      this.sweptAt = now;
      for (const [key, state] of this.sources) {
        if (now - state.loggedAt >= this.intervalMs && state.suppressed === 0) this.sources.delete(key);
      }
    }
    return this.sources.size < MAX_TRACKED_SOURCES ? source : OTHER_SOURCES;
  }
}
