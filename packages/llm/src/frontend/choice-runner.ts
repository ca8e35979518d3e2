import { TdistError } from "@tdist/runtime";
import type { ChoiceStream } from "../disagg/prefill-router.js";
import type { RoutingDecision } from "../kv-router/llm-router.js";
import type { EngineOutput, FinishReason, TokenLogprob } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import type { ModelEntry } from "./model-manager.js";
import type { ModelPipeline } from "./model-pipeline.js";
import {
  continuationOf,
  isMigratableEngineError,
  isMigratableFailure,
  type MigrationPolicy,
} from "./request-migration.js";

/** Shared reason for cancelling what is left once a response is complete (no per-request stack trace). */
const RESPONSE_FINISHED = new TdistError("cancelled", "response finished");

/** One event of one choice as the routes see it. */
export interface ChoiceEvent {
  index: number;
  text: string;
  tokenIds: number[];
  logprobs?: TokenLogprob[];
  finishReason?: FinishReason;
  /** Why the choice ended with `finish_reason: "error"`: what was thrown (a transport failure, with internal detail). */
  error?: unknown;
  /** The message an engine itself ended the choice with (`EngineOutput.error`), meant for the client. */
  engineError?: string;
}

export interface ChoiceSpec {
  index: number;
  request: PreprocessedRequest;
}

export interface ChoiceTotals {
  /** The router's decision for the first choice (worker, cached blocks), when the router reports one. */
  decision?: RoutingDecision | undefined;
  /** The instance the first choice was sent to, whatever the router (empty when routing failed). */
  workerId?: string | undefined;
  /** The prefill worker of the first choice, when it was prefilled remotely. */
  prefillWorkerId?: string | undefined;
  completionTokens: number;
  cachedTokens: number;
  firstTokenAt: number | undefined;
  tokenTimes: number[];
}

/** Receives a request's choice events one at a time, as they are decoded. */
export type ChoiceSink = (event: ChoiceEvent) => void;

/**
 * Runs every choice of a request concurrently through the model's engine
 * workers and hands each decoded event to `sink` as soon as it is decoded,
 * in arrival order (no queue and no await between the engine's output and
 * the sink). Between engine outputs a choice waits on `backpressure()` when
 * it returns a promise (the client is behind). A stop string ends a choice
 * and kills its engine request; aborting `signal` (the client left) kills
 * them all. Resolves once every choice has ended.
 *
 * A choice whose worker fails in a way that says the worker, not the
 * request, is at fault (see {@link isMigratableFailure}, an engine's
 * `engine_crashed` / `engine_shutting_down`, a stream ending without a
 * finish reason) moves to another worker, up to `migration.limit` times:
 * the failed workers are excluded, the tokens so far are appended to the
 * prompt and the limits reduced ({@link continuationOf}), and the same
 * decoder goes on, so the detokenizer's split characters and the stop
 * matcher's held-back text carry over and nothing is lost or repeated.
 *
 * A failure that is not migrated, before any event was emitted, rejects
 * (so the route can answer with an HTTP error) and cancels the other
 * choices silently; after output it ends that choice with
 * `finish_reason: "error"`.
 */
export async function runChoices(
  entry: ModelEntry<ModelPipeline>,
  choices: readonly ChoiceSpec[],
  stopStrings: readonly string[],
  signal: AbortSignal,
  totals: ChoiceTotals,
  sink: ChoiceSink,
  backpressure: () => Promise<void> | undefined = () => undefined,
  migration: MigrationPolicy = NO_MIGRATION,
): Promise<void> {
  let emittedAny = false;
  let failedEarly: { error: unknown } | undefined;
  const emit = (event: ChoiceEvent): void => {
    if (failedEarly) return;
    emittedAny = true;
    sink(event);
  };
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const model = entry.name;

  /** Opens the choice's first stream: through the prefill router when the model has one. */
  const openFirst = (request: PreprocessedRequest, first: boolean, requestId: string | undefined): Attempt => {
    // Each choice decides on its own: its decode worker's cache, and the prefill workers' load, when it is routed.
    const prefillRouter = entry.prefillRouter;
    if (prefillRouter !== undefined) {
      const choice = prefillRouter.generate(request, controller.signal, requestId);
      if (first) {
        if (entry.llmRouter !== undefined) totals.decision = choice.decision as RoutingDecision | undefined;
        if (choice.instanceId !== "") totals.workerId = choice.instanceId;
      }
      // The first choice's prefill worker is known once its first output is in (a fallback has none).
      return { stream: choice, instanceId: choice.instanceId, prefill: first ? choice : undefined };
    }
    return openRouted(request, first, requestId, []);
  };

  /** Opens a stream through the model's client (routing happens inside generate(); the route's hooks follow it). */
  const openRouted = (
    request: PreprocessedRequest,
    first: boolean,
    requestId: string | undefined,
    exclude: readonly string[],
  ): Attempt => {
    const routed = entry.client.generate(request, {
      signal: controller.signal,
      ...(requestId === undefined ? {} : { requestId }),
      ...(exclude.length === 0 ? {} : { exclude }),
    });
    if (first) {
      // The model's client routes through the model's LLM router, whose decisions are RoutingDecisions.
      if (entry.llmRouter !== undefined) totals.decision = routed.route?.decision as RoutingDecision | undefined;
      if (routed.instanceId !== "") totals.workerId = routed.instanceId;
    }
    return { stream: routed, instanceId: routed.instanceId, prefill: undefined };
  };

  const runOne = async ({ index, request }: ChoiceSpec): Promise<void> => {
    const decoder = entry.pipeline.decoder(request, stopStrings);
    const first = index === choices[0]?.index;
    const requestId =
      migration.limit === 0 ? undefined : choices.length > 1 ? `${migration.requestId}-${index}` : migration.requestId;
    let migrationsLeft = migration.limit;
    // Every token the workers produced for this choice, in order: what a continuation appends to the prompt.
    const generated: number[] = [];
    const failedWorkers: string[] = [];
    let attempt = openFirst(request, first, requestId);
    let migratedAt: number | undefined;
    // What cut the previous attempt, for the client when no other worker is left to take the request.
    let previousFailure: unknown;
    let finished: FinishReason | undefined;
    try {
      for (;;) {
        // Why this attempt's worker failed, when it may move to another.
        let failure: unknown;
        // The client already inhibits a worker whose stream failed in transport; failures only readable here do it here.
        let inhibit = false;
        try {
          for await (const output of attempt.stream) {
            if (attempt.prefill !== undefined) {
              totals.prefillWorkerId = attempt.prefill.prefillWorkerId;
              attempt.prefill = undefined;
            }
            if (migratedAt !== undefined) {
              migration.metrics?.duration.observe({ model }, (performance.now() - migratedAt) / 1000);
              migratedAt = undefined;
            }
            let consumed = output;
            if (output.finishReason === "error" && migrationsLeft > 0 && isMigratableEngineError(output)) {
              failure = output;
              // The worker stays reachable and restarts its engine: keep requests off it while others can
              // serve, but never refuse the model's last worker, whose engine will be back in a moment.
              inhibit = entry.client.instances().length > 1;
              if (output.tokenIds.length === 0) break;
              // Keep the tokens that came with the failure; the next worker continues after them.
              const { finishReason: _f, error: _e, errorCode: _c, ...tokens } = output;
              consumed = tokens;
            }
            if (consumed.cachedTokens) totals.cachedTokens = Math.max(totals.cachedTokens, consumed.cachedTokens);
            if (consumed.tokenIds.length > 0) {
              const now = performance.now();
              totals.firstTokenAt ??= now;
              totals.tokenTimes.push(now);
              if (migration.limit > 0) generated.push(...consumed.tokenIds);
            }
            const step = decoder.push(consumed);
            if (consumed.finishReason === "error" && !step.finishReason) step.finishReason = "error";
            if (step.text || step.finishReason || step.tokenIds.length > 0) {
              // The decoder returns a fresh object per step: tag it in place (this runs once per token).
              const event = step as ChoiceEvent;
              event.index = index;
              if (consumed.error) event.engineError = consumed.error;
              emit(event);
            }
            if (step.finishReason) {
              finished = step.finishReason;
              break;
            }
            if (failure !== undefined) break;
            const behind = backpressure();
            if (behind) await behind;
          }
          if (!finished && failure === undefined && migrationsLeft > 0 && !controller.signal.aborted) {
            failure = new TdistError("disconnected", "the engine stream ended without a finish reason");
            inhibit = true;
          }
        } catch (err) {
          if (!controller.signal.aborted && previousFailure !== undefined && isNoInstances(err)) {
            // Nowhere to move it: the client hears what broke the stream, not that no other worker is left.
            if (previousFailure instanceof Error) throw previousFailure;
            const { tokenIds: _consumed, logprobs: _also, ...ending } = previousFailure as EngineOutput;
            migrationsLeft = 0;
            previousFailure = undefined;
            attempt = { stream: [{ ...ending, tokenIds: [] }], instanceId: "", prefill: undefined };
            continue;
          }
          if (controller.signal.aborted || migrationsLeft === 0 || !isMigratableFailure(err)) throw err;
          failure = err;
        }
        if (failure === undefined || finished) break;
        const continuation = continuationOf(request, generated);
        if (continuation === undefined) break;
        migrationsLeft--;
        previousFailure = failure;
        if (attempt.instanceId !== "") {
          failedWorkers.push(attempt.instanceId);
          if (inhibit) entry.client.inhibit(attempt.instanceId);
        }
        const kind = generated.length === 0 ? "new_request" : "ongoing_request";
        migration.metrics?.migrations.inc({ model, migration_type: kind });
        migratedAt = performance.now();
        migration.logger?.info(
          {
            model,
            requestId,
            failedWorker: attempt.instanceId,
            generatedTokens: generated.length,
            migrationType: kind,
          },
          "migrating a request to another worker",
        );
        // A new request that never reached its worker still names the one that serves it.
        attempt = openRouted(continuation, first && kind === "new_request", requestId, failedWorkers);
      }
      if (!finished) {
        const step = decoder.flush();
        emit({ index, ...step, finishReason: step.finishReason ?? "stop" });
      }
    } catch (err) {
      if (controller.signal.aborted) {
        emit({ index, text: "", tokenIds: [], finishReason: "cancelled" });
      } else if (!emittedAny) {
        failedEarly ??= { error: err };
        controller.abort(RESPONSE_FINISHED);
      } else {
        emit({ index, text: "", tokenIds: [], finishReason: "error", error: err });
      }
    } finally {
      totals.completionTokens += decoder.completionTokens;
    }
  };

  try {
    await Promise.all(choices.map(runOne));
  } finally {
    signal.removeEventListener("abort", onAbort);
    controller.abort(RESPONSE_FINISHED);
  }
  if (failedEarly) throw failedEarly.error;
}

function isNoInstances(error: unknown): boolean {
  return error instanceof TdistError && error.category === "no_instances";
}

/** One stream a choice reads, and the worker it came from. */
interface Attempt {
  /** A worker's stream, or the one output that ends a choice nobody could take over. */
  stream: AsyncIterable<EngineOutput> | Iterable<EngineOutput>;
  /** Empty when routing failed. */
  instanceId: string;
  /** The prefill router's choice, until its first output names the prefill worker. */
  prefill: ChoiceStream | undefined;
}

const NO_MIGRATION: MigrationPolicy = Object.freeze({ limit: 0, requestId: "" });
