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
  /**
   * Return each prompt token's logprob (given the tokens before it) and this
   * many alternatives per position (0 = only the prompt token's own), on the
   * first output as `EngineOutput.promptLogprobs`. Needs the engine's
   * `prompt_logprobs` capability.
   */
  promptLogprobs?: number;
}

/**
 * Constrained decoding: the output must match this. Needs the engine's
 * `structured_output` capability; an engine without it refuses the request
 * (`bad_request`).
 * - `json_schema`: a JSON value valid against `schema` (OpenAI
 *   `response_format: {type: "json_schema"}`, vLLM `structured_outputs.json`);
 * - `json_object`: any JSON object (`response_format: {type: "json_object"}`);
 * - `regex`: text matching `pattern` in full (vLLM `structured_outputs.regex`);
 * - `choice`: exactly one of `choices` (vLLM `structured_outputs.choice`).
 */
export type GuidedDecoding =
  | { kind: "json_schema"; schema: Record<string, unknown> }
  | { kind: "json_object" }
  | { kind: "regex"; pattern: string }
  | { kind: "choice"; choices: string[] };

export interface PreprocessedRequest {
  /** Served model name. */
  model: string;
  tokenIds: number[];
  sampling: SamplingOptions;
  stop: StopConditions;
  /** End-of-sequence ids from the model card. */
  eosTokenIds: number[];
  output: OutputOptions;
  /** Constrained decoding, when the request asks for structured output. */
  guided?: GuidedDecoding;
  /** Free-form hints (routing decisions, migration attempt, ...). */
  annotations?: Record<string, string>;
  /** Disaggregated serving: this request's phase on a prefill or a decode worker; absent when aggregated. */
  disaggregation?: DisaggregationParams;
}
