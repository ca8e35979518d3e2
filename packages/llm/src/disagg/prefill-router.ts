import {
  type Client,
  type Instance,
  type Logger,
  type ResponseStream,
  type Route,
  type RouterPolicy,
  type StreamOutcome,
  TdistError,
} from "@tdist/runtime";
import type { RoutingDecision } from "../kv-router/llm-router.js";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import type { DisaggregationMetrics } from "./disagg-metrics.js";
import { decideDisaggregation, type ResolvedDisaggregationOptions } from "./disagg-policy.js";

/** Response header naming the prefill worker of a request prefilled remotely. */
export const PREFILL_WORKER_HEADER = "x-tdist-prefill-worker";

/**
 * Workers the prefill router picks among before it opens a stream: the
 * pick runs the pool's router now (its decision feeds the policy), and the
 * stream opens later through the client with that route pinned, so the
 * route's hooks still follow the stream.
 */
export interface WorkerPool {
  readonly client: Client<PreprocessedRequest, EngineOutput>;
  /** The pool's router's route for `request`; undefined when no worker fits. May throw a TdistError. */
  pick(request: PreprocessedRequest): Route | undefined;
  /** Live workers of the pool. */
  liveWorkers(): readonly Instance[];
}

/** One choice's engine stream, as the choice runner reads it. */
export interface ChoiceStream extends AsyncIterable<EngineOutput> {
  /** The decode (or aggregated) worker; empty when routing failed. */
  readonly instanceId: string;
  /** The decode router's decision (a RoutingDecision for LLM routers). */
  readonly decision: unknown;
  /** The prefill worker that computed the prompt, once its token arrived; undefined when prefilled locally. */
  readonly prefillWorkerId: string | undefined;
}

export interface PrefillRouterOptions {
  model: string;
  blockSize: number;
  decode: WorkerPool;
  /** The model's prefill pool now (undefined when it has none). */
  prefill: () => WorkerPool | undefined;
  options: ResolvedDisaggregationOptions;
  metrics?: DisaggregationMetrics | undefined;
  logger: Logger;
}

/** How a route picked but never opened is released (a decision made against it). */
const UNUSED: StreamOutcome = Object.freeze({ status: "cancelled" });

/** A policy that returns a route already picked (the stream opens after the decision). */
function pinned(route: Route): RouterPolicy {
  return { name: "pinned", pick: () => route };
}

/**
 * Dynamo's conditional disaggregation for one model: picks the decode worker
 * first (its cached prefix decides how much prefill is left), then a prefill
 * worker, decides with {@link decideDisaggregation}, and either prefills on
 * the prefill worker and continues on the decode worker from the
 * transferred KV cache, or sends the request to the decode worker as it is.
 * The caller sees one stream either way. A prefill worker that fails before
 * its token makes the decode worker prefill the request itself (`fallback`).
 */
export class PrefillRouter {
  constructor(private readonly options: PrefillRouterOptions) {}

  /** `requestId` names the request on every worker it reaches (a migration re-uses it). */
  generate(request: PreprocessedRequest, signal: AbortSignal, requestId?: string): ChoiceStream {
    const { decode, metrics, model } = this.options;
    let decodeRoute: Route | undefined;
    try {
      decodeRoute = decode.pick(request);
      if (decodeRoute === undefined) throw new TdistError("no_instances", `no live workers serve ${model}`);
    } catch (err) {
      return failedChoice(TdistError.wrap(err, "internal", "router failed"));
    }
    const routingDecision = decodeRoute.decision as RoutingDecision | undefined;
    const prefillPool = this.options.prefill();
    let prefillRoute: Route | undefined;
    if (prefillPool !== undefined && prefillPool.liveWorkers().length > 0) {
      try {
        prefillRoute = prefillPool.pick(request);
      } catch (err) {
        // Every prefill worker busy (or refused): prefill on the decode worker.
        this.options.logger.debug({ err, model }, "no prefill worker fits; prefilling locally");
      }
    }
    const prefillDecision = prefillRoute?.decision as RoutingDecision | undefined;
    const decision = decideDisaggregation(
      {
        promptTokens: request.tokenIds.length,
        cachedBlocks: routingDecision?.cachedBlocks ?? 0,
        blockSize: this.options.blockSize,
        prefillWorker:
          prefillRoute === undefined
            ? undefined
            : {
                workerId: prefillRoute.instance.instanceId,
                queuedPrefillTokens: prefillDecision?.queuedPrefillTokens ?? 0,
              },
      },
      this.options.options,
    );
    metrics?.decided(model, decision.kind === "remote" ? "remote" : decision.outcome);
    if (decision.kind === "local" || prefillRoute === undefined || prefillPool === undefined) {
      prefillRoute?.release?.(UNUSED);
      const stream = decode.client.generate(request, {
        router: pinned(decodeRoute),
        signal,
        ...(requestId === undefined ? {} : { requestId }),
      });
      return {
        [Symbol.asyncIterator]: () => stream,
        instanceId: stream.instanceId,
        decision: routingDecision,
        prefillWorkerId: undefined,
      };
    }
    return new RemoteChoice(this.options, request, decodeRoute, prefillRoute, prefillPool, signal, requestId);
  }
}

/** A choice prefilled on a prefill worker and decoded on the decode worker. */
class RemoteChoice implements ChoiceStream {
  readonly instanceId: string;
  readonly decision: unknown;
  prefillWorkerId: string | undefined;

  constructor(
    private readonly options: PrefillRouterOptions,
    private readonly request: PreprocessedRequest,
    private readonly decodeRoute: Route,
    private readonly prefillRoute: Route,
    private readonly prefillPool: WorkerPool,
    private readonly signal: AbortSignal,
    private readonly requestId: string | undefined,
  ) {
    this.instanceId = decodeRoute.instance.instanceId;
    this.decision = decodeRoute.decision;
  }

  [Symbol.asyncIterator](): AsyncIterator<EngineOutput> {
    return this.outputs();
  }

  private streamOptions(): { signal: AbortSignal; requestId?: string } {
    return this.requestId === undefined ? { signal: this.signal } : { signal: this.signal, requestId: this.requestId };
  }

  private async *outputs(): AsyncGenerator<EngineOutput> {
    const { decode, metrics, model, logger } = this.options;
    const request = this.request;
    let decodeOpened = false;
    let finished = false;
    const prefillStream = this.prefillPool.client.generate(
      { ...request, disaggregation: { phase: "prefill" } },
      { router: pinned(this.prefillRoute), ...this.streamOptions() },
    );
    let drained: Promise<void> | undefined;
    try {
      const first = await firstOutput(prefillStream);
      if (this.signal.aborted) throw this.signal.reason;
      const output = first.output;
      if (!usablePrefill(output)) {
        prefillStream.kill();
        logger.warn(
          { model, prefillWorker: this.prefillRoute.instance.instanceId, err: first.error ?? first.output?.error },
          "prefill worker failed before its token; prefilling on the decode worker",
        );
        metrics?.decided(model, "fallback");
        decodeOpened = true;
        yield* decode.client.generate(request, { router: pinned(this.decodeRoute), ...this.streamOptions() });
        finished = true;
        return;
      }
      // Some engines keep the offer alive with their request: read the prefill stream to its end meanwhile.
      drained = drain(prefillStream);
      this.prefillWorkerId = this.prefillRoute.instance.instanceId;
      const { kvTransfer, ...token } = output;
      if (output.finishReason !== undefined || kvTransfer === undefined || request.stop.maxTokens <= 1) {
        // The one token ends the request: no decode.
        yield output.finishReason === undefined ? { ...token, finishReason: "length" } : token;
        finished = true;
        return;
      }
      const handoffStarted = performance.now();
      yield token;
      const firstToken = output.tokenIds[output.tokenIds.length - 1] as number;
      const decodeRequest: PreprocessedRequest = {
        ...request,
        tokenIds: [...request.tokenIds, firstToken],
        stop: {
          ...request.stop,
          maxTokens: request.stop.maxTokens - 1,
          ...(request.stop.minTokens === undefined ? {} : { minTokens: Math.max(0, request.stop.minTokens - 1) }),
        },
        disaggregation: {
          phase: "decode",
          kvTransfer,
          kvTokens: request.tokenIds.length,
          prefillWorkerId: this.prefillRoute.instance.instanceId,
        },
      };
      decodeOpened = true;
      let firstDecode = true;
      for await (const next of decode.client.generate(decodeRequest, {
        router: pinned(this.decodeRoute),
        ...this.streamOptions(),
      })) {
        if (firstDecode) {
          firstDecode = false;
          if (next.kvImport === "fallback") metrics?.decided(model, "fallback");
          else if (next.kvImport === "fetched") {
            metrics?.kvTransferBytes.inc({ model }, kvTransfer.byteCount);
            metrics?.handoffSeconds.observe({ model }, (performance.now() - handoffStarted) / 1000);
            // The imported prompt was computed by the prefill worker, not found in a cache: the prefill
            // worker's own prefix-cache hit (its output's cachedTokens) is what the client is told.
            if (next.cachedTokens !== undefined) {
              const { cachedTokens: _imported, ...rest } = next;
              yield rest;
              continue;
            }
          }
        }
        yield next;
      }
      finished = true;
    } finally {
      if (!decodeOpened) this.decodeRoute.release?.(UNUSED);
      if (!finished) prefillStream.kill();
      await drained;
    }
  }
}

/** The prefill worker's first output, or what failed before it. */
async function firstOutput(
  stream: ResponseStream<EngineOutput>,
): Promise<{ output: EngineOutput | undefined; error?: unknown }> {
  try {
    const step = await stream.next();
    return { output: step.done ? undefined : step.value };
  } catch (error) {
    return { output: undefined, error };
  }
}

/** A prefill answer the decode worker can continue from (or that ends the request by itself). */
function usablePrefill(output: EngineOutput | undefined): output is EngineOutput {
  if (output === undefined || output.tokenIds.length === 0) return false;
  if (output.finishReason === "error" || output.finishReason === "cancelled") return false;
  return output.finishReason !== undefined || output.kvTransfer !== undefined;
}

async function drain(stream: ResponseStream<EngineOutput>): Promise<void> {
  try {
    for await (const _ of stream) {
      // Nothing else is expected after the one output.
    }
  } catch {
    // The prefill request's end does not matter once its token is out.
  }
}

function failedChoice(error: TdistError): ChoiceStream {
  return {
    instanceId: "",
    decision: undefined,
    prefillWorkerId: undefined,
    [Symbol.asyncIterator]: () => ({
      next: () => Promise.reject(error),
    }),
  };
}
