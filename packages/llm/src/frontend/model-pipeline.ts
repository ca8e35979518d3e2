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

/** Per-call options of preprocessing: `signal` stops waiting for a prompt's tokenization. */
export interface PreprocessCall {
  signal?: AbortSignal;
}

export interface ModelPipeline {
  /**
   * Throws (or rejects with) a `bad_request` TdistError (with `param` when it
   * can) for invalid or too-long input. May answer asynchronously: a large
   * prompt is tokenized off the event loop.
   */
  preprocessChat(request: ChatCompletionRequest, call?: PreprocessCall): PreprocessedInput | Promise<PreprocessedInput>;
  preprocessCompletion(
    request: CompletionRequest,
    prompt: string | number[],
    call?: PreprocessCall,
  ): PreprocessedInput | Promise<PreprocessedInput>;
  decoder(request: PreprocessedRequest, stopStrings: readonly string[]): ChoiceDecoder;
  /** The text of one token, for logprobs. */
  tokenText(tokenId: number): string;
  /** Releases what the pipeline holds (its tokenizer thread); the model manager calls it when the model goes. */
  close?(): Promise<void>;
}
