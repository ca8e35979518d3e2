import type { Instance, PickContext, Route, RouterPolicy } from "@tdist/runtime";
import { TdistError } from "@tdist/runtime";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import type { RouterMetrics } from "./router-metrics.js";

/**
 * Request annotation that names a request in its {@link RoutingDecision}
 * (and in the active sequences other router replicas see). Without it the
 * router makes up an id.
 */
export const ROUTER_REQUEST_ID_ANNOTATION = "request_id";
/** Per-request override of the KV router's overlap weight (a number >= 0). */
export const ROUTER_OVERLAP_WEIGHT_ANNOTATION = "router_overlap_weight";
/** Per-request override of the KV router's softmax temperature (a number >= 0). */
export const ROUTER_TEMPERATURE_ANNOTATION = "router_temperature";

/** Response headers the frontend sets from {@link RoutingDecision}. */
export const WORKER_HEADER = "x-tdist-worker";
export const CACHED_BLOCKS_HEADER = "x-tdist-cached-blocks";

/** What a router decided for one request. */
export interface RoutingDecision {
  requestId: string;
  workerId: string;
  /** Leading prompt blocks the router believed the worker holds (0 for cache-blind policies). */
  cachedBlocks: number;
  /** Full blocks of the prompt. */
  requestBlocks: number;
  /** The policy that decided (`kv`, `sglang`, ...). */
  policy: string;
  /**
   * Uncached prompt tokens the router predicted were already waiting for
   * prefill on the worker before this request (KV modes; absent when the
   * policy does not predict load). The prefill router's busy check reads it.
   */
  queuedPrefillTokens?: number;
}

/** One worker's load as a router predicts it from the requests it routed. */
export interface PredictedWorkerLoad {
  workerId: string;
  prefillTokens: number;
  decodeBlocks: number;
}

/**
 * A routing policy of the LLM stack: a runtime {@link RouterPolicy} (the
 * frontend gives it to the model's client) whose routes carry the
 * {@link RoutingDecision} and keep the policy's load predictions honest:
 * the route's `onFirstResponse` (prefill done) and `release` (the request
 * ended, however it ended) are driven by `Client.generate`. Cache-blind
 * modes simply have nothing to update.
 *
 * ```ts
 * const router = await createRouterPolicy("kv", { eventPlane, namespace, component, blockSize });
 * const stream = client.generate(request, { router });
 * const decision = stream.route?.decision as RoutingDecision; // -> x-tdist-worker, x-tdist-cached-blocks
 * ```
 */
export interface LlmRouter extends RouterPolicy<RoutingDecision> {
  /**
   * A worker's card appeared. Throws `invalid_option` when its KV block
   * size differs from the router's: the worker is then never routed to
   * (a silent zero score would hide the misconfiguration).
   */
  registerWorker(workerId: string, card: { kvBlockSize: number; limits?: { totalKvBlocks?: number } }): void;
  /** A worker left discovery: forget its cache and load. */
  removeWorker(workerId: string): void;
  /** Per-worker predicted load, for the policies that predict one (the KV modes). */
  predictedLoads?(): PredictedWorkerLoad[];
  /** Stops subscriptions and timers. */
  close(): Promise<void>;
}

/**
 * The bookkeeping every {@link LlmRouter} shares: request ids, decision
 * metrics, and the live-instance filter (workers refused at registration
 * are never picked).
 */
export class RouterBookkeeping {
  private readonly refused = new Set<string>();
  private generated = 0;

  constructor(private readonly prefix: string) {}

  /** The request id from the annotation, or a new one. */
  requestId(request: unknown): string {
    const annotated = (request as PreprocessedRequest | undefined)?.annotations?.[ROUTER_REQUEST_ID_ANNOTATION];
    if (typeof annotated === "string" && annotated.length > 0) return annotated;
    return `${this.prefix}-${++this.generated}`;
  }

  /**
   * Counts a routing decision in the router metrics, when there are any:
   * request and cached blocks, and the decision's latency since `startedMs`
   * (a `performance.now()` reading).
   */
  observe(decision: RoutingDecision, metrics: RouterMetrics | undefined, modelName: string, startedMs: number): void {
    metrics?.observe(
      modelName,
      decision.policy,
      decision.requestBlocks,
      decision.cachedBlocks,
      (performance.now() - startedMs) / 1000,
    );
  }

  refuse(workerId: string): void {
    this.refused.add(workerId);
  }

  /**
   * Admits a worker whose card's block size matches the router's; refuses it
   * (never picked) and rethrows `invalid_option` otherwise.
   */
  admit(workerId: string, routerBlockSize: number, card: { kvBlockSize: number }): void {
    try {
      checkBlockSize(workerId, routerBlockSize, card);
    } catch (err) {
      this.refuse(workerId);
      throw err;
    }
    this.forget(workerId);
  }

  forget(workerId: string): void {
    this.refused.delete(workerId);
  }

  /** The instances a policy may pick from (all but refused workers). */
  eligible(instances: readonly Instance[]): readonly Instance[] {
    if (this.refused.size === 0) return instances;
    return instances.filter((instance) => !this.refused.has(instance.instanceId));
  }
}

/** Checks a card's block size against the router's; throws `invalid_option` on a mismatch. */
export function checkBlockSize(workerId: string, routerBlockSize: number, card: { kvBlockSize: number }): void {
  if (card?.kvBlockSize !== routerBlockSize) {
    throw new TdistError(
      "invalid_option",
      `worker ${workerId} serves KV blocks of ${String(card?.kvBlockSize)} tokens but the router hashes blocks of ${routerBlockSize}: ` +
        "they must match (set the router's block size from the model card)",
    );
  }
}

/** Reads a PreprocessedRequest's token ids for content-aware policies; throws `bad_request` when absent. */
export function requestTokens(request: unknown): readonly number[] {
  const tokens = (request as PreprocessedRequest | undefined)?.tokenIds;
  if (!Array.isArray(tokens)) {
    throw new TdistError("bad_request", "content-aware routing needs a PreprocessedRequest with tokenIds");
  }
  return tokens;
}

/**
 * Wraps a cache-blind runtime policy (round-robin, random, least-loaded,
 * power-of-two) as an {@link LlmRouter}, so every mode records decisions
 * and the frontend wires one interface. Block sizes do not matter to these
 * policies, so `registerWorker` accepts any.
 */
export class BasicLlmRouter implements LlmRouter {
  readonly name: string;
  private readonly books: RouterBookkeeping;

  constructor(
    private readonly policy: RouterPolicy,
    private readonly blockSize: number,
  ) {
    this.name = policy.name;
    this.books = new RouterBookkeeping(policy.name);
  }

  pick(instances: readonly Instance[], context: PickContext): Route<RoutingDecision> | undefined {
    const chosen = this.policy.pick(this.books.eligible(instances), context);
    if (chosen === undefined) return undefined;
    const tokens = (context.request as PreprocessedRequest | undefined)?.tokenIds;
    const route: Route<RoutingDecision> = {
      instance: chosen.instance,
      decision: {
        requestId: this.books.requestId(context.request),
        workerId: chosen.instance.instanceId,
        cachedBlocks: 0,
        requestBlocks: Array.isArray(tokens) ? Math.floor(tokens.length / this.blockSize) : 0,
        policy: this.name,
      },
    };
    // The wrapped policy's own hooks, if it keeps any per-request state.
    if (chosen.onFirstResponse) route.onFirstResponse = () => chosen.onFirstResponse?.();
    if (chosen.release) route.release = (outcome) => chosen.release?.(outcome);
    return route;
  }

  /** Cache-blind: a worker's block size does not matter here. */
  registerWorker(): void {}

  removeWorker(): void {}

  async close(): Promise<void> {}
}
