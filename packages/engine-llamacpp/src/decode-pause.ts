/**
 * A pause in decoding for work that changes a sequence's KV cache (erasing
 * an old conversation's tokens, loading a saved state).
 *
 * node-llama-cpp runs such work under the context's lock, which its decode
 * loop holds for as long as any sequence has a decode queued. With
 * continuous batching some sequence nearly always has, so a request that
 * needed its sequence erased waited until every other stream ended
 * (measured: TTFT p90 2.6 s at 8 concurrent requests). While a pause is held,
 * the generation loops stop asking for their next token after the one in
 * flight, the decode loop runs dry and gives up the lock, the KV work runs,
 * and decoding resumes: a stall of about one decode step.
 */
export class DecodePause {
  #holders = 0;
  #resumers: (() => void)[] = [];

  /** Whether generation loops should wait (`resumed()`) before their next token. */
  get paused(): boolean {
    return this.#holders > 0;
  }

  /** Runs `work` with decoding paused. */
  async during<T>(work: () => Promise<T>): Promise<T> {
    this.#holders++;
    try {
      return await work();
    } finally {
      this.#holders--;
      if (this.#holders === 0) {
        const resumers = this.#resumers;
        this.#resumers = [];
        for (const resume of resumers) resume();
      }
    }
  }

  /** Resolves once no pause is held (at once when none is). */
  resumed(): Promise<void> {
    if (this.#holders === 0) return Promise.resolve();
    return new Promise((resolve) => this.#resumers.push(resolve));
  }
}
