/**
 * How long one engine step takes, shaped like a vLLM-style engine serving a
 * ~8B model on one datacenter GPU. Only the shape matters for routing
 * experiments: prefill cost grows with new tokens (linear for the MLPs, plus
 * attention over the context so far), decode cost with batch size and the KV
 * blocks it reads, and cached prefix tokens cost nothing.
 *
 * ```
 * prefill(chunk) = prefillPerTokenMs * n + prefillAttentionMs * n * contextEnd
 *                  (n = new tokens in the chunk, contextEnd = tokens computed after it)
 * decode(step)   = decodePerSequenceMs * sequences + decodePerKvBlockMs * their KV blocks
 * step           = (stepOverheadMs + sum(prefill) + decode) / speedupRatio
 * ```
 */
export interface MockerTimingModel {
  /** Fixed cost of any step (kernel launches, scheduling). Default 5 ms. */
  stepOverheadMs: number;
  /** Prefill cost per new token. Default 0.035 ms (~28k tokens/s). */
  prefillPerTokenMs: number;
  /** Prefill attention cost per (new token x context token). Default 1e-6 ms. */
  prefillAttentionMs: number;
  /** Decode cost per sequence in the batch. Default 0.03 ms. */
  decodePerSequenceMs: number;
  /** Decode cost per KV block the decoding sequences hold. Default 0.0015 ms. */
  decodePerKvBlockMs: number;
}

export const DEFAULT_TIMING_MODEL: Readonly<MockerTimingModel> = Object.freeze({
  stepOverheadMs: 5,
  prefillPerTokenMs: 0.035,
  prefillAttentionMs: 1e-6,
  decodePerSequenceMs: 0.03,
  decodePerKvBlockMs: 0.0015,
});

/** What a step computes, as the timing model sees it. */
export interface StepWork {
  /** One entry per prefill chunk: new tokens and the context length once it is computed. */
  prefillChunks: { newTokens: number; contextEnd: number }[];
  decodeSequences: number;
  /** KV blocks held by the decoding sequences. */
  decodeKvBlocks: number;
}

/** Simulated duration of one step in ms, before the speed-up is applied. */
export function stepDurationMs(model: MockerTimingModel, work: StepWork): number {
  let ms = model.stepOverheadMs;
  for (const chunk of work.prefillChunks) {
    ms += model.prefillPerTokenMs * chunk.newTokens + model.prefillAttentionMs * chunk.newTokens * chunk.contextEnd;
  }
  if (work.decodeSequences > 0) {
    ms += model.decodePerSequenceMs * work.decodeSequences + model.decodePerKvBlockMs * work.decodeKvBlocks;
  }
  return ms;
}
