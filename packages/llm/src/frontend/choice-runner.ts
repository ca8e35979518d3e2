import { TdistError } from "@tdist/runtime";
import type { ChoiceStream } from "../disagg/prefill-router.js";
import type { RoutingDecision } from "../kv-router/llm-router.js";
import type { EngineOutput, FinishReason, TokenLogprob } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import type { ModelEntry } from "./model-manager.js";
import type { ModelPipeline } from "./model-pipeline.js";

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
 * them all. Resolves once every choice has ended. A failure before any event
 * was emitted rejects (so the route can answer with an HTTP error) and
 * cancels the other choices silently; after output it ends that choice with
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

  const runOne = async ({ index, request }: ChoiceSpec): Promise<void> => {
    const decoder = entry.pipeline.decoder(request, stopStrings);
    const first = index === choices[0]?.index;
    // Each choice decides on its own: its decode worker's cache, and the prefill workers' load, when it is routed.
    const prefillRouter = entry.prefillRouter;
    let stream: AsyncIterable<EngineOutput>;
    // The first choice's prefill worker is known once its first output is in (a fallback has none).
    let notePrefillWorker: ChoiceStream | undefined;
    if (prefillRouter !== undefined) {
      const choice = prefillRouter.generate(request, controller.signal);
      stream = choice;
      if (first) {
        if (entry.llmRouter !== undefined) totals.decision = choice.decision as RoutingDecision | undefined;
        if (choice.instanceId !== "") totals.workerId = choice.instanceId;
        notePrefillWorker = choice;
      }
    } else {
      // Routing happens inside generate(); the route's hooks follow the stream from there.
      const routed = entry.client.generate(request, { signal: controller.signal });
      stream = routed;
      if (first) {
        // The model's client routes through the model's LLM router, whose decisions are RoutingDecisions.
        if (entry.llmRouter !== undefined) totals.decision = routed.route?.decision as RoutingDecision | undefined;
        if (routed.instanceId !== "") totals.workerId = routed.instanceId;
      }
    }
    let finished: FinishReason | undefined;
    try {
      for await (const output of stream) {
        if (notePrefillWorker !== undefined) {
          totals.prefillWorkerId = notePrefillWorker.prefillWorkerId;
          notePrefillWorker = undefined;
        }
        if (output.cachedTokens) totals.cachedTokens = Math.max(totals.cachedTokens, output.cachedTokens);
        if (output.tokenIds.length > 0) {
          const now = performance.now();
          totals.firstTokenAt ??= now;
          totals.tokenTimes.push(now);
        }
        const step = decoder.push(output);
        if (output.finishReason === "error" && !step.finishReason) step.finishReason = "error";
        if (step.text || step.finishReason || step.tokenIds.length > 0) {
          // The decoder returns a fresh object per step: tag it in place (this runs once per token).
          const event = step as ChoiceEvent;
          event.index = index;
          if (output.error) event.engineError = output.error;
          emit(event);
        }
        if (step.finishReason) {
          finished = step.finishReason;
          break;
        }
        const behind = backpressure();
        if (behind) await behind;
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
