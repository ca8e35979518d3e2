/**
 * A context's sequences, handed out one per request: the idle sequence whose
 * cached tokens share the longest prefix with the prompt (least recently
 * used on ties), so a returning conversation reuses its KV cache; requests
 * wait in FIFO order when all are busy. Shared by the engine's child process
 * and bench/llamacpp's in-process baseline.
 */
import type { LlamaContext, LlamaContextSequence } from "node-llama-cpp";

/** How many leading tokens `a` and `b` share. */
export function commonPrefixLength(a: readonly number[], b: readonly number[]): number {
  const limit = Math.min(a.length, b.length);
  let i = 0;
  while (i < limit && a[i] === b[i]) i++;
  return i;
}

export interface SequenceSlot {
  /** The slot's position in the pool, from 0. */
  index: number;
  sequence: LlamaContextSequence;
  busy: boolean;
  lastUsed: number;
}

interface Waiter {
  prompt: readonly number[];
  resolve: (slot: SequenceSlot) => void;
  reject: (err: Error) => void;
}

/** The context's sequences, handed out one per request. */
export class SequencePool {
  readonly #slots: SequenceSlot[];
  readonly #waiters: Waiter[] = [];
  #clock = 0;

  constructor(context: LlamaContext, count: number) {
    this.#slots = Array.from({ length: count }, (_, index) => ({
      index,
      sequence: context.getSequence(),
      busy: false,
      lastUsed: 0,
    }));
  }

  /** The idle sequence sharing the longest prefix with `prompt` (least recently used on ties), waiting in FIFO order when all are busy. */
  acquire(prompt: readonly number[], signal?: AbortSignal): Promise<SequenceSlot> {
    if (this.#waiters.length === 0) {
      const slot = this.#pick(prompt);
      if (slot !== undefined) return Promise.resolve(slot);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { prompt, resolve, reject };
      this.#waiters.push(waiter);
      signal?.addEventListener(
        "abort",
        () => {
          const index = this.#waiters.indexOf(waiter);
          if (index >= 0) {
            this.#waiters.splice(index, 1);
            reject(new Error("cancelled while waiting for a sequence"));
          }
        },
        { once: true },
      );
    });
  }

  release(slot: SequenceSlot): void {
    slot.busy = false;
    slot.lastUsed = ++this.#clock;
    const waiter = this.#waiters.shift();
    if (waiter === undefined) return;
    const next = this.#pick(waiter.prompt);
    if (next !== undefined) waiter.resolve(next);
    else this.#waiters.unshift(waiter);
  }

  #pick(prompt: readonly number[]): SequenceSlot | undefined {
    let best: SequenceSlot | undefined;
    let bestShared = -1;
    for (const slot of this.#slots) {
      if (slot.busy) continue;
      const shared = prompt.length === 0 ? 0 : commonPrefixLength(slot.sequence.contextTokens, prompt);
      if (shared > bestShared || (shared === bestShared && best !== undefined && slot.lastUsed < best.lastUsed)) {
        best = slot;
        bestShared = shared;
      }
    }
    if (best !== undefined) best.busy = true;
    return best;
  }
}
