/**
 * The OpenAI API shapes the frontend accepts and returns (chat completions,
 * completions, models, errors), with the extensions vLLM users expect
 * (`top_k`, `min_p`, `ignore_eos`, `min_tokens`, `repetition_penalty`).
 */

export type ChatRole = "system" | "developer" | "user" | "assistant" | "tool";

export interface ChatContentPart {
  type: string;
  text?: string;
}

export interface ChatMessage {
  role: ChatRole;
  content?: string | ChatContentPart[] | null;
  name?: string;
  tool_calls?: unknown[];
  tool_call_id?: string;
  reasoning_content?: string;
}

export interface StreamOptions {
  include_usage?: boolean;
}

/** Sampling and stopping fields shared by chat and completions. */
export interface CommonRequestFields {
  model: string;
  stream?: boolean;
  stream_options?: StreamOptions | null;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  n?: number | null;
  user?: string;
  ignore_eos?: boolean;
  min_tokens?: number;
  /** Only `{ type: "text" }` is served: there is no guided (JSON) decoding. */
  response_format?: { type: string } | null;
  /**
   * Token id (decimal string) to a bias in [-100, 100] added to its logit
   * before sampling; at most 300 entries, ids inside the model's vocabulary.
   */
  logit_bias?: Record<string, number> | null;
  /** Dynamo's request extensions (see `NvExt`). */
  nvext?: NvExt;
}

/**
 * Dynamo's `nvext` request extension, the part tdist serves: per-request
 * overrides of the KV router's knobs (`--kv-overlap-weight`,
 * `--router-temperature`) for this request only.
 */
export interface NvExt {
  router_config_override?: {
    /** Weight of the prompt blocks still to prefill against decode load (KV router). */
    overlap_score_weight?: number;
    /** 0 picks the cheapest worker; above 0 samples by softmax over costs. */
    router_temperature?: number;
  };
}

export interface ChatCompletionRequest extends CommonRequestFields {
  messages: ChatMessage[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  /** Refused when non-empty: tool calls are not parsed from the output yet. */
  tools?: unknown[] | null;
  /** Only `"none"`, or `"auto"` without tools. */
  tool_choice?: unknown;
  /** The deprecated form of `tools`; refused when non-empty. */
  functions?: unknown[] | null;
  /** The deprecated form of `tool_choice`; only `"none"` / `"auto"`. */
  function_call?: unknown;
  chat_template_kwargs?: Record<string, unknown>;
}

export interface CompletionRequest extends CommonRequestFields {
  prompt: string | string[] | number[] | number[][];
  logprobs?: number | null;
  echo?: boolean;
  /** Accepted only as 1 (what some clients send by default), as in vLLM V1. */
  best_of?: number | null;
  /** Refused unless empty: no fill-in-the-middle completion. */
  suffix?: string | null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

export type OpenAIFinishReason = "stop" | "length" | "cancelled" | "error" | null;

export interface ChatLogprobContent {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export interface ChatCompletionChoice {
  index: number;
  message: { role: "assistant"; content: string };
  finish_reason: OpenAIFinishReason;
  logprobs: { content: ChatLogprobContent[] } | null;
}

export interface ChatCompletionResponse {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: ChatCompletionChoice[];
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: {
    index: number;
    delta: { role?: "assistant"; content?: string };
    finish_reason: OpenAIFinishReason;
    logprobs: { content: ChatLogprobContent[] } | null;
  }[];
  usage?: Usage | null;
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[] | null;
  text_offset: number[];
}

export interface CompletionChoice {
  index: number;
  text: string;
  finish_reason: OpenAIFinishReason;
  logprobs: CompletionLogprobs | null;
}

export interface CompletionResponse {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage: Usage;
}

export interface CompletionChunk {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: Usage | null;
}

export interface ModelObject {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}
