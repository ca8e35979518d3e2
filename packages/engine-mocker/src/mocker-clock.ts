import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { delay } from "@tdist/runtime";

/**
 * Where the mocker's simulated time comes from. `sleep(ms)` means "let `ms`
 * of simulated engine time pass": the system clock waits that long, a
 * {@link VirtualClock} only moves its counter, so tests run any workload in
 * milliseconds and still measure simulated durations exactly.
 */
export interface MockerClock {
  /** Milliseconds on this clock's own scale (only differences are meaningful). */
  now(): number;
  /** Lets `ms` of clock time pass. Resolves early (never rejects) when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** Lag after which the system clock stops trying to catch up (it rebases instead of bursting). */
const MAX_LAG_MS = 50;

/**
 * Wall-clock time. Sub-millisecond steps (a high speed-up) are accumulated
 * against a deadline and slept in whole-millisecond chunks, because timers
 * cannot wait less than about 1 ms: the average pace stays right.
 */
export class SystemClock implements MockerClock {
  private deadline = performance.now();

  now(): number {
    return performance.now();
  }

  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    const now = performance.now();
    this.deadline = Math.max(this.deadline, now - MAX_LAG_MS) + Math.max(0, ms);
    const wait = this.deadline - now;
    if (wait < 1) {
      await yieldToEventLoop();
      return;
    }
    try {
      await delay(wait, signal);
    } catch {
      // Aborted: the caller checks its own state after waking.
    }
  }
}

/**
 * Simulated time that advances only when slept. Each sleep still yields to
 * the event loop once, so consumers and I/O run between engine steps.
 */
export class VirtualClock implements MockerClock {
  private time: number;

  constructor(startMs = 0) {
    this.time = startMs;
  }

  now(): number {
    return this.time;
  }

  async sleep(ms: number): Promise<void> {
    this.time += Math.max(0, ms);
    await yieldToEventLoop();
  }
}
