import { AsyncQueue, TdistError } from "@tdist/runtime";
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
  error?: string;
}

export interface ChoiceSpec {
  index: number;
  request: PreprocessedRequest;
}

export interface ChoiceTotals {
  /** The router's decision for the first choice (worker, cached blocks), when the router reports one. */
  decision?: RoutingDecision | undefined;
  completionTokens: number;
  cachedTokens: number;
  firstTokenAt: number | undefined;
  tokenTimes: number[];
}

/**
 * Merges consecutive events of the same choice into one, so a client (or an
 * engine) that runs ahead is answered with fewer, larger SSE chunks instead
 * of one per token. Order within a choice is kept.
 */
export function coalesceEvents(events: readonly ChoiceEvent[]): ChoiceEvent[] {
  const out: ChoiceEvent[] = [];
  for (const event of events) {
    const last = out[out.length - 1];
    if (last && last.index === event.index && !last.finishReason && !last.error) {
      out[out.length - 1] = {
        index: event.index,
        text: last.text + event.text,
        tokenIds: [...last.tokenIds, ...event.tokenIds],
        ...(last.logprobs || event.logprobs ? { logprobs: [...(last.logprobs ?? []), ...(event.logprobs ?? [])] } : {}),
        ...(event.finishReason ? { finishReason: event.finishReason } : {}),
        ...(event.error ? { error: event.error } : {}),
      };
    } else {
      out.push(event);
    }
  }
  return out;
}

/**
 * Runs every choice of a request concurrently through the model's engine
 * workers and yields their decoded events in arrival order. A stop string
 * ends a choice and kills its engine request; aborting `signal` (the client
 * left) kills them all. An error before any output is thrown (so the route
 * can answer with an HTTP error); after output it ends that choice with
 * `finish_reason: "error"`.
 */
export async function* runChoices(
  entry: ModelEntry<ModelPipeline>,
  choices: readonly ChoiceSpec[],
  stopStrings: readonly string[],
  signal: AbortSignal,
  totals: ChoiceTotals,
): AsyncGenerator<ChoiceEvent[]> {
  const queue = new AsyncQueue<ChoiceEvent | { failed: unknown }>();
  let pending = choices.length;
  let emittedAny = false;
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });

  const router = entry.llmRouter;
  const runOne = async ({ index, request }: ChoiceSpec): Promise<void> => {
    const decoder = entry.pipeline.decoder(request, stopStrings);
    // Routing happens inside generate(); the LLM router then knows the request by this id.
    const stream = entry.client.generate(request, { signal: controller.signal });
    const routedId = router?.requestIdOf(request);
    if (routedId !== undefined && index === choices[0]?.index) totals.decision = router?.lastDecision(routedId);
    let sawToken = false;
    let finished: FinishReason | undefined;
    try {
      for await (const output of stream as AsyncIterable<EngineOutput>) {
        if (output.cachedTokens) totals.cachedTokens = Math.max(totals.cachedTokens, output.cachedTokens);
        if (output.tokenIds.length > 0) {
          const now = performance.now();
          totals.firstTokenAt ??= now;
          totals.tokenTimes.push(now);
          if (!sawToken && routedId !== undefined) router?.onFirstToken(routedId);
          sawToken = true;
        }
        const step = decoder.push(output);
        if (output.finishReason === "error" && !step.finishReason) step.finishReason = "error";
        if (step.text || step.finishReason || step.tokenIds.length > 0) {
          // The decoder returns a fresh object per step: tag it in place (this runs once per token).
          const event = step as ChoiceEvent;
          event.index = index;
          if (output.error) event.error = output.error;
          queue.push(event);
        }
        if (step.finishReason) {
          finished = step.finishReason;
          break;
        }
      }
      if (!finished) {
        const step = decoder.flush();
        queue.push({ index, ...step, finishReason: step.finishReason ?? "stop" });
      }
    } catch (err) {
      if (controller.signal.aborted) {
        queue.push({ index, text: "", tokenIds: [], finishReason: "cancelled" });
      } else {
        queue.push({ failed: err, index } as { failed: unknown });
      }
    } finally {
      if (routedId !== undefined) router?.onComplete(routedId);
      totals.completionTokens += decoder.completionTokens;
      if (--pending === 0) queue.end();
    }
  };

  for (const choice of choices) void runOne(choice);
  try {
    for await (const first of queue) {
      // Whatever else is already waiting goes out in the same batch.
      const rest = queue.takeBuffered();
      if (rest.length === 0 && !("failed" in first)) {
        emittedAny = true;
        yield [first];
        continue;
      }
      const batch = [first, ...rest];
      const ready: ChoiceEvent[] = [];
      for (const event of batch) {
        if ("failed" in event) {
          if (!emittedAny && ready.length === 0) throw event.failed;
          const message = event.failed instanceof Error ? event.failed.message : String(event.failed);
          ready.push({
            index: (event as unknown as { index: number }).index,
            text: "",
            tokenIds: [],
            finishReason: "error",
            error: message,
          });
          continue;
        }
        ready.push(event);
      }
      emittedAny = true;
      yield coalesceEvents(ready);
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    controller.abort(RESPONSE_FINISHED);
  }
}
