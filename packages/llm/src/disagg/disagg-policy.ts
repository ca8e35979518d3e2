import { TdistError } from "@tdist/runtime";

/**
 * When the frontend prefills a request on a prefill worker instead of on the
 * decode worker the router chose (Dynamo's conditional disaggregation): only
 * when the prompt is long once the decode worker's cache is counted, and the
 * prefill worker would start it soon.
 */
export interface DisaggregationOptions {
  /**
   * Prefill remotely only when the decode worker would have to compute more
   * than this many prompt tokens (prompt minus its cached prefix). Short
   * prefills are cheaper in place than a KV transfer. Default 512.
   */
  minUncachedTokens?: number;
  /**
   * A prefill worker with more prompt tokens than this already queued is
   * busy: the decode worker prefills locally rather than wait behind it.
   * Default 8192 (about three long prompts of 3000 tokens).
   */
  prefillBusyTokens?: number;
}

export interface ResolvedDisaggregationOptions {
  readonly minUncachedTokens: number;
  readonly prefillBusyTokens: number;
}

export const DEFAULT_DISAGGREGATION: ResolvedDisaggregationOptions = {
  minUncachedTokens: 512,
  prefillBusyTokens: 8192,
};

export function resolveDisaggregationOptions(options: DisaggregationOptions = {}): ResolvedDisaggregationOptions {
  const resolved = { ...DEFAULT_DISAGGREGATION, ...definedOnly(options) };
  for (const [name, value] of Object.entries(resolved)) {
    if (!Number.isInteger(value) || value < 0) {
      throw new TdistError("invalid_option", `disaggregation option ${name} must be an integer >= 0, got ${value}`);
    }
  }
  return resolved;
}

function definedOnly(options: DisaggregationOptions): Partial<ResolvedDisaggregationOptions> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}

/** What the prefill router knows about one request once the decode worker is chosen. */
export interface DisaggregationInput {
  readonly promptTokens: number;
  /** Leading prompt blocks the chosen decode worker holds (the KV router's overlap; 0 when cache-blind). */
  readonly cachedBlocks: number;
  readonly blockSize: number;
  /** The prefill worker the prefill router picked, with its queued prompt tokens; undefined when none is alive. */
  readonly prefillWorker: { readonly workerId: string; readonly queuedPrefillTokens: number } | undefined;
}

/** The outcomes, as the `dynamo_frontend_disagg_decisions_total{outcome}` metric names them. */
export type DisaggregationOutcome = "remote" | "local" | "skipped_no_prefill_workers" | "fallback";

export type DisaggregationDecision =
  | { readonly kind: "remote"; readonly prefillWorkerId: string; readonly uncachedTokens: number }
  | {
      readonly kind: "local";
      readonly outcome: Exclude<DisaggregationOutcome, "remote" | "fallback">;
      /** Why, for logs and tests: a short prompt, a busy prefill worker, or none alive. */
      readonly reason: "short_prompt" | "prefill_busy" | "no_prefill_workers";
      readonly uncachedTokens: number;
    };

/** Prompt tokens the decode worker would compute itself: the prompt minus its cached prefix. */
export function uncachedPromptTokens(
  input: Pick<DisaggregationInput, "promptTokens" | "cachedBlocks" | "blockSize">,
): number {
  return Math.max(0, input.promptTokens - input.cachedBlocks * input.blockSize);
}

/**
 * Decides where one request is prefilled. Pure, so the frontend, the
 * benchmark's simulation and tests share it.
 */
export function decideDisaggregation(
  input: DisaggregationInput,
  options: ResolvedDisaggregationOptions = DEFAULT_DISAGGREGATION,
): DisaggregationDecision {
  const uncachedTokens = uncachedPromptTokens(input);
  if (input.prefillWorker === undefined) {
    return { kind: "local", outcome: "skipped_no_prefill_workers", reason: "no_prefill_workers", uncachedTokens };
  }
  if (uncachedTokens <= options.minUncachedTokens) {
    return { kind: "local", outcome: "local", reason: "short_prompt", uncachedTokens };
  }
  if (input.prefillWorker.queuedPrefillTokens > options.prefillBusyTokens) {
    return { kind: "local", outcome: "local", reason: "prefill_busy", uncachedTokens };
  }
  return { kind: "remote", prefillWorkerId: input.prefillWorker.workerId, uncachedTokens };
}
