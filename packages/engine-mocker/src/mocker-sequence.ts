import type { EngineOutput, KvStoredBlock } from "@tdist/llm";
import type { KvBlock } from "./kv-block-pool.js";
import type { TokenSampler } from "./token-sampler.js";

/**
 * The messages of one sequence, from the step loop to its `generate`
 * generator. Bounded by the sequence itself: at most one message per
 * generated token plus the final one.
 */
export class OutputQueue {
  private readonly items: EngineOutput[] = [];
  private ended = false;
  private failure: unknown;
  private wake: (() => void) | undefined;

  push(message: EngineOutput): void {
    this.items.push(message);
    this.notify();
  }

  /** No more messages after those queued; with `error`, `next` throws it once they are read. */
  end(error?: unknown): void {
    this.ended = true;
    this.failure = error;
    this.notify();
  }

  /** The next message, or undefined when the queue ended or `signal` aborted. */
  async next(signal: AbortSignal): Promise<EngineOutput | undefined> {
    while (this.items.length === 0) {
      if (this.ended) {
        if (this.failure !== undefined) throw this.failure;
        return undefined;
      }
      if (signal.aborted) return undefined;
      await new Promise<void>((resolve) => {
        const onAbort = (): void => resolve();
        signal.addEventListener("abort", onAbort, { once: true });
        this.wake = () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.items.shift();
  }

  private notify(): void {
    this.wake?.();
  }
}

export type SequenceState = "waiting" | "running" | "finished";

/** One request inside the engine. */
export class MockerSequence {
  state: SequenceState = "waiting";
  /** Prompt then generated tokens. */
  readonly tokens: number[];
  /** Tokens whose KV is computed. */
  numComputed = 0;
  /** Block table: block `i` holds tokens `[i*blockSize, (i+1)*blockSize)`. */
  blocks: KvBlock[] = [];
  /** Leading blocks already registered in (or found in) the prefix cache. */
  numCommittedBlocks = 0;
  /** Chained hashes of the full blocks of `tokens`, extended as blocks fill. */
  readonly blockHashes: KvStoredBlock[] = [];
  generated = 0;
  /** Prefix hit at first admission; reported on the first output. */
  cachedTokens: number | undefined;
  firstOutputSent = false;
  readonly outputs = new OutputQueue();

  constructor(
    readonly id: number,
    prompt: readonly number[],
    readonly maxTokens: number,
    readonly minTokens: number,
    readonly stopTokenIds: ReadonlySet<number>,
    readonly sampler: TokenSampler,
  ) {
    this.tokens = [...prompt];
  }

  /** Tokens still to compute before the next token can be sampled. */
  get pendingTokens(): number {
    return this.tokens.length - this.numComputed;
  }

  /** True when the only pending token is the last sampled one (a decode step). */
  get isDecoding(): boolean {
    return this.generated > 0 && this.pendingTokens === 1;
  }
}
