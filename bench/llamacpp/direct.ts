/**
 * The baseline of bench/llamacpp: node-llama-cpp called directly in this
 * process, set up as `llamacpp-worker-process.ts` sets up its context (same
 * threads, sequences, context size, batch size, flash attention, the
 * engine's `SequenceBatching`) and driven as the engine drives it (an idle
 * sequence per request, preferring the longest cached prefix; greedy
 * `evaluateWithMetadata` with the engine's default sampling options).
 */
import { commonPrefixLength, DecodePause, SequenceBatching, SequencePool } from "@tdist/engine-llamacpp";
import { getLlama, type Llama, type LlamaContext, LlamaLogLevel, type LlamaModel, type Token } from "node-llama-cpp";

export interface DirectOptions {
  modelPath: string;
  threads: number;
  sequences: number;
  contextSize: number;
  batchSize: number;
  flashAttention: boolean;
}

/** One request: when its first token came and how many it made. */
export interface GenerationSample {
  ttftMs: number;
  tokens: number;
  ok: boolean;
}

export class DirectLlama {
  readonly #pool: SequencePool;
  readonly #pause = new DecodePause();

  private constructor(
    readonly llama: Llama,
    readonly model: LlamaModel,
    readonly context: LlamaContext,
    sequences: number,
  ) {
    this.#pool = new SequencePool(context, sequences);
  }

  static async load(options: DirectOptions): Promise<DirectLlama> {
    const llama = await getLlama({
      gpu: false,
      build: "never",
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.error,
    });
    const model = await llama.loadModel({ modelPath: options.modelPath });
    const batching = new SequenceBatching();
    const context = await model.createContext({
      sequences: options.sequences,
      contextSize: options.contextSize,
      batchSize: options.batchSize,
      threads: options.threads,
      flashAttention: options.flashAttention,
      batching: { itemPrioritizationStrategy: batching.prioritize },
    });
    batching.attach(context);
    return new DirectLlama(llama, model, context, options.sequences);
  }

  /** llama.cpp's tokenization (special tokens parsed), as the engine's `tokenize`. */
  tokenize(text: string): number[] {
    return this.model.tokenize(text, true) as number[];
  }

  /** Greedy generation of exactly `maxTokens` tokens (end-of-generation tokens included, as with `ignore_eos`). */
  async generate(prompt: readonly number[], maxTokens: number): Promise<GenerationSample> {
    const started = performance.now();
    let ttftMs = -1;
    let tokens = 0;
    const slot = await this.#pool.acquire(prompt);
    try {
      const sequence = slot.sequence;
      const keep = Math.min(commonPrefixLength(sequence.contextTokens, prompt), prompt.length - 1);
      const end = sequence.nextTokenIndex;
      if (end > keep) await this.#pause.during(() => sequence.eraseContextTokenRanges([{ start: keep, end }]));
      const iterator = sequence.evaluateWithMetadata(
        prompt.slice(keep) as Token[],
        { confidence: false, probabilities: false },
        { temperature: 0, topK: 0, topP: 1, minP: 0, yieldEogToken: true },
      );
      for await (const _ of iterator) {
        if (++tokens === 1) ttftMs = performance.now() - started;
        if (tokens >= maxTokens) break;
        if (this.#pause.paused) await this.#pause.resumed();
      }
      return { ttftMs, tokens, ok: tokens === maxTokens };
    } finally {
      this.#pool.release(slot);
    }
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}
