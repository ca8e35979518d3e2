import type { EngineOutput, FinishReason, TokenLogprob } from "../protocol/engine-output.js";
import type { ChatCompletionRequest, CompletionRequest } from "../protocol/openai.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";

/** One decoded step of one choice: text safe to emit now, and whether generation must end. */
export interface DecodedStep {
  text: string;
  tokenIds: number[];
  logprobs?: TokenLogprob[];
  finishReason?: FinishReason;
}

/** Turns one choice's engine outputs into text (detokenizer + stop strings). */
export interface ChoiceDecoder {
  push(output: EngineOutput): DecodedStep;
  /** Held-back text once the engine stream has ended. */
  flush(): DecodedStep;
  /** Tokens generated so far (what `usage.completion_tokens` counts). */
  readonly completionTokens: number;
}

/**
 * Per-model request processing: the frontend asks it to turn OpenAI requests
 * into engine requests and engine outputs into text.
 */
export interface PreprocessedInput {
  request: PreprocessedRequest;
  /** Stop strings the decoder enforces (they never reach the engine). */
  stopStrings: string[];
}

export interface ModelPipeline {
  /** Throws a `bad_request` TdistError (with `param` when it can) for invalid or too-long input. */
  preprocessChat(request: ChatCompletionRequest): PreprocessedInput;
  preprocessCompletion(request: CompletionRequest, prompt: string | number[]): PreprocessedInput;
  decoder(request: PreprocessedRequest, stopStrings: readonly string[]): ChoiceDecoder;
  /** The text of one token, for logprobs. */
  tokenText(tokenId: number): string;
}
