import type { KvTransferHandle } from "@tdist/runtime";

/**
 * What a worker does in disaggregated serving (`tdist worker --mode`, the
 * model card's `role`): `aggregated` prefills and decodes its own requests
 * (the default); `prefill` only computes prompts' KV caches and hands them
 * over; `decode` continues from a KV cache another worker computed, and
 * serves requests aggregated when no prefill worker is alive.
 */
export const WORKER_ROLES = ["aggregated", "prefill", "decode"] as const;
export type WorkerRole = (typeof WORKER_ROLES)[number];

/** The component prefill workers register under; decode and aggregated workers use `backend`. */
export const PREFILL_COMPONENT = "prefill";

/** The component a worker of `role` registers its `generate` endpoint and card under. */
export function componentForRole(role: WorkerRole): string {
  return role === "prefill" ? PREFILL_COMPONENT : "backend";
}

/**
 * On a request to a prefill worker (`PreprocessedRequest.disaggregation`).
 * The worker evaluates `tokenIds`, samples the first output token under the
 * request's own sampling and stop conditions, and answers with one output:
 * - the token ends the request (eos, a stop token id, `maxTokens` 1): that
 *   token with its `finishReason`, and no transfer;
 * - otherwise: that token, no `finishReason`, and `kvTransfer`, the handle
 *   of an offer of the KV cache of `tokenIds` (every prompt token; the
 *   first output token is not evaluated yet), for one fetch by the decode
 *   worker. The offer expires after its ttl if nobody fetches it.
 */
export interface PrefillPhase {
  readonly phase: "prefill";
}

/**
 * On a request to a decode worker. Its `tokenIds` are the prompt followed
 * by the first output token the prefill worker sampled, and its stop
 * conditions are the client's minus that token (`maxTokens` - 1, `minTokens`
 * - 1). The worker fetches the KV cache of the first `kvTokens` tokens
 * (`tokenIds.length - 1`), imports it, and generates from there, as if it had
 * prefilled them itself. When the fetch fails in a way
 * `isKvTransferFallback` accepts, it prefills `tokenIds` itself and says so
 * (`EngineOutput.kvImport: "fallback"`): the request still succeeds.
 */
export interface DecodePhase {
  readonly phase: "decode";
  readonly kvTransfer: KvTransferHandle;
  /** How many leading `tokenIds` the transferred cache covers. */
  readonly kvTokens: number;
  /** The prefill worker's instance id, for logs and metrics. */
  readonly prefillWorkerId: string;
}

export type DisaggregationParams = PrefillPhase | DecodePhase;

/** How a decode worker got the prompt's KV cache, reported on its first output. */
export type KvImportOutcome = "fetched" | "fallback";
