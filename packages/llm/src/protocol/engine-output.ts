import type { KvTransferHandle } from "@tdist/runtime";
import type { KvImportOutcome } from "./disaggregation.js";

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
  /** Set with `finishReason: "error"`. */
  error?: string;
  /** Prompt tokens found in the engine's prefix cache (for metrics and routing). */
  cachedTokens?: number;
  /** A prefill worker's one output: the offer of the prompt's KV cache for the decode worker (see `PrefillPhase`). */
  kvTransfer?: KvTransferHandle;
  /** A decode worker's first output: whether the transferred KV cache was used or the prompt prefilled here. */
  kvImport?: KvImportOutcome;
}
