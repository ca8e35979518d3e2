import type { KvTransferHandle } from "@tdist/runtime";
import type { KvImportOutcome } from "./disaggregation.js";

/**
 * What went wrong when an engine ends a stream with `finishReason: "error"`,
 * so the frontend can tell a failing engine (migrate the request to another
 * worker) from a request the engine cannot serve (tell the client):
 * - `engine_crashed`: the engine (or its child process) died or lost its
 *   state; the request itself may be fine;
 * - `engine_shutting_down`: the engine is closing (a drain's end);
 * - `bad_request`: the request is invalid for this engine;
 * - `internal`: anything else the engine cannot attribute.
 * An error without a code counts as `internal`.
 */
export type EngineErrorCode = "engine_crashed" | "engine_shutting_down" | "bad_request" | "internal";

export const ENGINE_ERROR_CODES: readonly EngineErrorCode[] = [
  "engine_crashed",
  "engine_shutting_down",
  "bad_request",
  "internal",
];

/** Why a sequence ended. */
export type FinishReason = "stop" | "length" | "cancelled" | "error";

export interface TokenLogprob {
  tokenId: number;
  logprob: number;
  /** The most likely alternatives, best first, when requested. */
  top?: { tokenId: number; logprob: number }[];
}

/**
 * One message on an engine's response stream: zero or more new tokens and,
 * on the last message, the finish reason. Engines may batch several tokens
 * into one message.
 */
export interface EngineOutput {
  tokenIds: number[];
  logprobs?: TokenLogprob[];
  finishReason?: FinishReason;
  /** Set with `finishReason: "error"`: a message for the client. */
  error?: string;
  /** Set with `finishReason: "error"`: what kind of failure it was (absent: `internal`). */
  errorCode?: EngineErrorCode;
  /**
   * On the first output when `output.promptLogprobs` was asked: one entry per
   * prompt token, the first `null` (nothing precedes it), entry i the logprob
   * of prompt token i given tokens 0..i-1 (`tokenId` is that prompt token).
   */
  promptLogprobs?: (TokenLogprob | null)[];
  /** Prompt tokens found in the engine's prefix cache (for metrics and routing). */
  cachedTokens?: number;
  /** A prefill worker's one output: the offer of the prompt's KV cache for the decode worker (see `PrefillPhase`). */
  kvTransfer?: KvTransferHandle;
  /** A decode worker's first output: whether the transferred KV cache was used or the prompt prefilled here. */
  kvImport?: KvImportOutcome;
}
