import type { DisaggregationParams } from "./disaggregation.js";

/**
 * What the frontend sends to a worker's `generate` endpoint: the prompt as
 * token ids plus everything the engine needs to sample and stop. Strings are
 * gone by now; stop *strings* are enforced by the frontend's backend stage.
 */
export interface SamplingOptions {
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  repetitionPenalty?: number;
  /**
   * OpenAI `logit_bias`: token id (as a decimal string, the JSON object key)
   * to a bias in [-100, 100] added to that token's logit before sampling;
   * -100 bans the token, 100 all but forces it.
   */
  logitBias?: Record<string, number>;
}

export interface StopConditions {
  /** Most tokens to generate (always set by the frontend: the request's or the context's remainder). */
  maxTokens: number;
  /** Generate at least this many tokens before eos/stop ids may end the sequence. */
  minTokens?: number;
  /** Token ids that end the sequence (besides eos unless `ignoreEos`). */
  stopTokenIds?: number[];
  ignoreEos?: boolean;
}

export interface OutputOptions {
  /** Return the chosen token's logprob and this many alternatives per token (0 = only the chosen). */
  logprobs?: number;
}

export interface PreprocessedRequest {
  /** Served model name. */
  model: string;
  tokenIds: number[];
  sampling: SamplingOptions;
  stop: StopConditions;
  /** End-of-sequence ids from the model card. */
  eosTokenIds: number[];
  output: OutputOptions;
  /** Free-form hints (routing decisions, migration attempt, ...). */
  annotations?: Record<string, string>;
  /** Disaggregated serving: this request's phase on a prefill or a decode worker; absent when aggregated. */
  disaggregation?: DisaggregationParams;
}
