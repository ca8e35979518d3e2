import { setImmediate as nextTurn } from "node:timers/promises";
import type { MockerClock } from "@tdist/engine-mocker";
import { BinaryHeap } from "@tdist/llm";

interface Timer {
  at: number;
  seq: number;
  fire: () => void;
}

/**
 * Discrete-event simulated time for several engines at once. A sleep is a
 * timer at `now + ms`; time jumps to the next timer once everything that can
 * run at the current instant has run. A disaggregated engine sleeps in more
 * than one place at a time (its step loop, and each prefill answer waiting
 * out its transfer time), so the clock counts each engine's pending sleeps
 * and the driver's `isSettled` compares them with what the engine says it
 * is waiting on. A sleep whose signal aborts ends at once and stops
 * counting.
 */
export class EventClock {
  private time = 0;
  private seq = 0;
  private readonly heap = new BinaryHeap<Timer>((a, b) => a.at < b.at || (a.at === b.at && a.seq < b.seq));
  /** Pending sleeps per engine index. */
  readonly sleeps: number[] = [];
  /** Settle budgets exhausted (work that never went to sleep); 0 in a healthy run. */
  stuckSettles = 0;

  now(): number {
    return this.time;
  }

  /** A `MockerClock` for engine `index`, whose sleeps are counted for the settle check. */
  forEngine(index: number): MockerClock {
    this.sleeps[index] = 0;
    return {
      now: () => this.time,
      sleep: (ms: number, signal?: AbortSignal) =>
        new Promise<void>((resolve) => {
          if (signal?.aborted) {
            resolve();
            return;
          }
          let pending = true;
          const end = (): void => {
            if (!pending) return;
            pending = false;
            this.sleeps[index] = (this.sleeps[index] as number) - 1;
            signal?.removeEventListener("abort", end);
            resolve();
          };
          this.sleeps[index] = (this.sleeps[index] as number) + 1;
          signal?.addEventListener("abort", end, { once: true });
          this.push(this.time + Math.max(0, ms), end);
        }),
    };
  }

  /** Runs `fn` at simulated time `at` (or now, if `at` is past). */
  at(at: number, fn: () => void): void {
    this.push(Math.max(at, this.time), fn);
  }

  /** Fires timers in time order until none are left, settling after each; resolves with the final time. */
  async run(isSettled: () => boolean): Promise<number> {
    await this.settle(isSettled);
    while (this.heap.size > 0) {
      const timer = this.heap.pop() as Timer;
      this.time = timer.at;
      timer.fire();
      await this.settle(isSettled);
    }
    return this.time;
  }

  private async settle(isSettled: () => boolean): Promise<void> {
    // Engines, the KV hand-off and the driver continue in microtasks and a few event-loop turns.
    for (let turn = 0; turn < 256; turn++) {
      await nextTurn();
      if (isSettled()) return;
    }
    this.stuckSettles++;
  }

  private push(at: number, fire: () => void): void {
    this.heap.push({ at, seq: this.seq++, fire });
  }
}
