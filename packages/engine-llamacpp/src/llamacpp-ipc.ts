/**
 * Messages between the engine (parent) and its llama.cpp child process, over
 * Node's IPC channel with `serialization: "advanced"` (structured clone, so
 * typed arrays travel as they are). Each side sends arrays of messages,
 * coalesced per event-loop turn. Types only: the child imports nothing from
 * here at run time.
 */

/** How the child loads the model; the first message the parent sends. */
export interface WorkerConfig {
  modelPath: string;
  threads: number;
  /** Tokens per sequence. */
  contextSize: number;
  sequences: number;
  batchSize: number;
  flashAttention: boolean;
  /** Let llama.cpp decode several sequences in one batch (see `LlamaCppEngineOptions.batchAcrossSequences`). */
  batchAcrossSequences: boolean;
  gpu: false | "auto" | "cuda" | "vulkan" | "metal";
  /** Tokens a request may run ahead of the parent's consumer before the child pauses it. */
  creditWindow: number;
  /** Report what each sequence's KV cache holds (`kvCache`) and the load (`load`), for KV events and load metrics. */
  reportKvState: boolean;
  /** Tokens per KV block, for counting a load's active blocks. */
  kvBlockSize: number;
}

/** Sampling as the child applies it (defaults resolved by the parent). */
export interface WorkerSampling {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  /** Always set: the caller's, or a fresh random one (llama.cpp's own fallback is the time in seconds). */
  seed: number;
  /** Logits added before sampling, as `[tokenId, bias]`; -Infinity bans. */
  logitBias: [number, number][];
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
}

export interface WorkerGenerateRequest {
  tokenIds: number[];
  sampling: WorkerSampling;
  maxTokens: number;
  minTokens: number;
  /** Ids that end the sequence with "stop" once `minTokens` are out (eos ids already merged in unless ignored). */
  stopTokenIds: number[];
  /** Tokens that must not be sampled before `minTokens` are out. */
  suppressUntilMinTokens: number[];
  /** Return logprobs: the chosen token's (0) plus this many alternatives; absent = none. */
  logprobs?: number;
  /** A KV state file (from `exportState` or a transfer) to load into the sequence first. */
  statePath?: string;
  /**
   * Decode phase: a `statePath` that does not load (or holds no proper prefix
   * of the prompt) is dropped and the prompt prefilled here, reported as
   * `kvImport: "fallback"` on the first message. Without it, such a state
   * refuses the request.
   */
  prefillOnBadState?: boolean;
  /**
   * Prefill phase: generate one token; unless it ends the request, save the
   * sequence's state (the prompt's KV, the token not evaluated) to this path
   * and end with `exported`.
   */
  exportStatePath?: string;
}

export type ParentMessage =
  | { type: "init"; config: WorkerConfig }
  | { type: "generate"; id: number; request: WorkerGenerateRequest }
  /** Graceful: end the request with "cancelled" after the current token. */
  | { type: "stop"; id: number }
  /** Immediate: end the request, send nothing more but its `done`. */
  | { type: "kill"; id: number }
  | { type: "credit"; id: number; tokens: number }
  | { type: "call"; callId: number; call: WorkerCall }
  | { type: "shutdown" };

export type WorkerCall =
  | { kind: "tokenize"; text: string; specialTokens: boolean }
  /** Evaluates `tokenIds` (the prompt minus its last token) into a sequence and saves its KV state to `path`. */
  | { kind: "exportState"; tokenIds: number[]; path: string }
  /** Loads a KV state file into an idle sequence, as a cached prefix for the next matching request. */
  | { kind: "importState"; path: string };

export interface WorkerCallResults {
  tokenize: { tokenIds: number[] };
  exportState: { tokenCount: number; bytes: number };
  importState: { tokenCount: number };
}

export interface WorkerTokenLogprob {
  tokenId: number;
  logprob: number;
  top?: { tokenId: number; logprob: number }[];
}

/** What the child reports once the model is loaded. */
export interface WorkerReady {
  pid: number;
  /** Tokens per sequence, as created (llama.cpp may round up). */
  contextSize: number;
  sequences: number;
  threads: number;
  vocabSize: number;
  /** Every id llama.cpp treats as end of generation. */
  eogTokenIds: number[];
  bosTokenId?: number;
  eosTokenId?: number;
  loadMs: number;
}

export type ChildMessage =
  | { type: "ready"; ready: WorkerReady }
  | { type: "loadFailed"; message: string }
  | {
      type: "tokens";
      id: number;
      tokenIds: number[];
      logprobs?: WorkerTokenLogprob[];
      /** On a request's first message: prompt tokens reused from the sequence's cache. */
      cachedTokens?: number;
      /** On a request's first message, when its `statePath` was dropped (`prefillOnBadState`). */
      kvImport?: "fallback";
    }
  | {
      /** The request's last message, with its last tokens. */
      type: "done";
      id: number;
      /** `exported`: the first token is out and the prompt's state is in `exportStatePath`; the request goes on elsewhere. */
      finishReason: "stop" | "length" | "cancelled" | "error" | "killed" | "exported";
      tokenIds: number[];
      logprobs?: WorkerTokenLogprob[];
      cachedTokens?: number;
      kvImport?: "fallback";
      error?: string;
      /** The request was refused before it started (invalid, e.g. a state for another prompt). */
      badRequest?: boolean;
    }
  | { type: "result"; callId: number; result?: unknown; error?: string; badRequest?: boolean }
  | {
      /** A sequence's KV cache changed: it holds its first `keep` tokens (as last reported), then `append`. */
      type: "kvCache";
      sequence: number;
      keep: number;
      append: number[];
    }
  | {
      /** The load changed: sequences generating, requests waiting for one, their KV blocks, prompt tokens left to compute. */
      type: "load";
      activeSequences: number;
      waitingSequences: number;
      activeKvBlocks: number;
      prefillTokensQueued: number;
    };
