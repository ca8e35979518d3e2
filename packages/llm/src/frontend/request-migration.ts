import { type Logger, TdistError } from "@tdist/runtime";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import type { MigrationMetrics } from "./migration-metrics.js";

/** Migrations a request gets when neither the frontend nor the model card says (Dynamo's default). */
export const DEFAULT_MIGRATION_LIMIT = 3;

/** How one request's choices may move to other workers when theirs fail. */
export interface MigrationPolicy {
  /** Migrations per choice; 0 turns migration off. */
  limit: number;
  /** The request id every attempt carries (per choice when there are several). */
  requestId: string;
  metrics?: MigrationMetrics | undefined;
  /** Each migration is logged at info with the failed worker and the tokens carried over. */
  logger?: Logger | undefined;
}

/**
 * Whether a thrown stream failure says the worker, not the request, failed:
 * it could not be reached, dropped the stream or connection, stopped
 * answering, or is draining. A caller's cancellation and a handler's verdict
 * on the request (`bad_request`, `remote_handler`, `internal`) are not.
 */
export function isMigratableFailure(error: unknown): boolean {
  if (!(error instanceof TdistError)) return false;
  switch (error.category) {
    case "cannot_connect":
    case "disconnected":
    case "timeout":
    case "shutting_down":
      return true;
    default:
      return false;
  }
}

/** Whether an engine's in-band error says the engine failed (crashed, closing) rather than the request. */
export function isMigratableEngineError(output: EngineOutput): boolean {
  return output.errorCode === "engine_crashed" || output.errorCode === "engine_shutting_down";
}

/**
 * The request that continues `request` on another worker after `generated`
 * tokens: those tokens appended to the prompt, `maxTokens` and `minTokens`
 * reduced by as many, aggregated (a decode phase's KV hand-off belonged to
 * the failed worker). Undefined when nothing is left to generate.
 */
export function continuationOf(
  request: PreprocessedRequest,
  generated: readonly number[],
): PreprocessedRequest | undefined {
  const maxTokens = request.stop.maxTokens - generated.length;
  if (maxTokens <= 0) return undefined;
  const { disaggregation: _handOff, ...aggregated } = request;
  const stop = { ...request.stop, maxTokens };
  if (request.stop.minTokens !== undefined) stop.minTokens = Math.max(0, request.stop.minTokens - generated.length);
  return {
    ...aggregated,
    tokenIds: generated.length === 0 ? request.tokenIds : [...request.tokenIds, ...generated],
    stop,
  };
}
