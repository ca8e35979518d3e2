import type { EngineOutput, KvImportOutcome, KvStoredBlock } from "@tdist/llm";
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
  /**
   * A prefill-phase request: after its first token it leaves the engine
   * with its blocks in `handoffBlocks`, held until its KV offer ends.
   */
  prefillOnly = false;
  handoffBlocks: KvBlock[] | undefined;
  /** Leading tokens whose KV arrived from a prefill worker: admitted as computed, at no cost. 0 after a preemption. */
  importedTokens = 0;
  /** A decode-phase request: how its KV cache came, reported on the first output. */
  kvImport: KvImportOutcome | undefined;

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

  /** True when the only pending token is the last sampled one (a decode step), here or on the prefill worker. */
  get isDecoding(): boolean {
    return (this.generated > 0 || this.importedTokens > 0) && this.pendingTokens === 1;
  }
}
