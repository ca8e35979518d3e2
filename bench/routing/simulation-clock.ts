import { setImmediate as nextTurn } from "node:timers/promises";
import type { MockerClock } from "@tdist/engine-mocker";
import { BinaryHeap } from "@tdist/llm";

interface Timer {
  at: number;
  seq: number;
  fire: () => void;
}

/**
 * Discrete-event simulated time shared by many engines. The mocker's own
 * `VirtualClock` adds every sleep to one counter, which is right for one
 * engine but would serialise eight engines that should run in parallel;
 * here a sleep is a timer at `now + ms`, and time jumps from one timer to
 * the next once everything that can run at the current instant has run.
 *
 * "Everything has run" is checked, not guessed: after each timer the clock
 * yields to the event loop until `isSettled()` (supplied by the driver: each
 * engine with work is sleeping) holds, or the turn budget runs out (an
 * engine stuck with work it cannot schedule). No wall-clock sleeping.
 */
export class SimulationClock {
  private time = 0;
  private seq = 0;
  private readonly heap = new BinaryHeap<Timer>(earlier);
  /** Sleeping engines, by engine index. */
  readonly sleeping: boolean[] = [];
  stuckTurns = 0;

  now(): number {
    return this.time;
  }

  /** A `MockerClock` for engine `index`, whose sleeps are tracked for the settle check. */
  forEngine(index: number): MockerClock {
    this.sleeping[index] = false;
    return {
      now: () => this.time,
      sleep: (ms: number, signal?: AbortSignal) =>
        new Promise<void>((resolve) => {
          if (signal?.aborted) {
            resolve();
            return;
          }
          this.sleeping[index] = true;
          this.push(this.time + Math.max(0, ms), () => {
            this.sleeping[index] = false;
            resolve();
          });
        }),
    };
  }

  /** Runs `fn` at simulated time `at` (or now, if `at` is past). */
  at(at: number, fn: () => void): void {
    this.push(Math.max(at, this.time), fn);
  }

  get pending(): number {
    return this.heap.size;
  }

  /**
   * Fires timers in time order until none are left or `done()` holds,
   * settling after each. Resolves with the final simulated time.
   */
  async run(isSettled: () => boolean, done: () => boolean): Promise<number> {
    await this.settle(isSettled);
    while (this.heap.size > 0 && !done()) {
      const timer = this.heap.pop() as Timer;
      this.time = timer.at;
      timer.fire();
      await this.settle(isSettled);
    }
    return this.time;
  }

  private async settle(isSettled: () => boolean): Promise<void> {
    // Engines and consumers continue in microtasks and at most a few event-loop turns.
    for (let turn = 0; turn < 64; turn++) {
      await nextTurn();
      if (isSettled()) return;
    }
    this.stuckTurns++;
  }

  private push(at: number, fire: () => void): void {
    this.heap.push({ at, seq: this.seq++, fire });
  }
}

function earlier(a: Timer, b: Timer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
