import type { Instance, Logger, PickContext, Route } from "@tdist/runtime";
import { silentLogger, TdistError } from "@tdist/runtime";
import { computeBlockHashes } from "../kv/block-hash.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { ActiveSequences } from "./active-sequences.js";
import { KvIndexer } from "./kv-indexer.js";
import { cachedBlocksOf, KvScheduler, type KvSchedulerOptions, type WorkerView } from "./kv-scheduler.js";
import {
  type LlmRouter,
  type PredictedWorkerLoad,
  ROUTER_OVERLAP_WEIGHT_ANNOTATION,
  ROUTER_TEMPERATURE_ANNOTATION,
  RouterBookkeeping,
  type RoutingDecision,
  requestTokens,
} from "./llm-router.js";
import type { ActiveSequenceEvent, ReplicaSync } from "./replica-sync.js";
import { type RouterClock, systemRouterClock } from "./router-clock.js";
import type { RouterMetrics } from "./router-metrics.js";
import type { WorkerLoadTracker } from "./worker-load-tracker.js";

/** `kv`: cache contents from the workers' KV events. `kv-approx`: predicted from the router's own decisions. */
export type KvRouterMode = "kv" | "kv-approx";

export const DEFAULT_APPROX_TTL_MS = 120_000;
export const DEFAULT_APPROX_MAX_BLOCKS = 1 << 20;
export const DEFAULT_MAX_REQUEST_AGE_MS = 600_000;

export interface KvRouterOptions extends KvSchedulerOptions {
  /** Tokens per KV block (the model card's `kvBlockSize`). */
  blockSize: number;
  /** Default `kv`. */
  mode?: KvRouterMode;
  /** `kv-approx`: how long a routed prefix is assumed cached on its worker. Default 120 000 ms. */
  approxTtlMs?: number;
  /** Index bound in memberships (worker x block). Default 2^22 (`kv`), 2^20 (`kv-approx`). */
  maxBlocks?: number;
  /** Fraction of `maxBlocks` that pruning goes down to. Default 0.8. */
  pruneTargetRatio?: number;
  /** A request whose end is never reported leaves the predicted load after this long. Default 600 000 ms. */
  maxRequestAgeMs?: number;
  /**
   * The engines' reported load: read for each worker's KV capacity and for
   * the busy threshold. It is not fused into the cost, as in Dynamo: a report
   * is a snapshot of the last engine step, so taking the larger of it and
   * the prediction hid every request routed since that step (a burst then
   * piled onto the worker whose report was highest but unchanged).
   */
  loads?: WorkerLoadTracker;
  /** Shares active sequences with other router replicas. */
  replicaSync?: ReplicaSync;
  /** Identifies this router among replicas. Default: the replica sync's id, else random. */
  routerId?: string;
  /** The index to use (e.g. one fed by a subscription). Default: a new one (mode-appropriate). */
  indexer?: KvIndexer;
  metrics?: RouterMetrics;
  /** `model` label of the metrics. Default "unknown". */
  modelName?: string;
  clock?: RouterClock;
  logger?: Logger;
}

function annotationNumber(request: unknown, key: string): number | undefined {
  const value = (request as PreprocessedRequest | undefined)?.annotations?.[key];
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed) || parsed < 0) {
    throw new TdistError("bad_request", `annotation ${key} must be a number >= 0, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/**
 * The KV-cache-aware router (docs/architecture.md, "KV-aware routing"), a runtime
 * `RouterPolicy` over `PreprocessedRequest.tokenIds`:
 *
 * 1. hash the prompt's full blocks with the shared block hash;
 * 2. ask the indexer how many leading blocks each live worker holds;
 * 3. add each worker's load, predicted from this router's (and its
 *    replicas') in-flight requests: prefill tokens until the first token,
 *    KV blocks until completion;
 * 4. pick `argmin(overlapWeight * prefillBlocks + decodeBlocks)` (or sample
 *    by temperature), skipping busy workers unless all are busy;
 * 5. record the request as active on the chosen worker (and, in
 *    `kv-approx` mode, its prefix as cached there for `approxTtlMs`).
 *
 * The route it returns keeps the predicted load honest: its first response
 * moves the request's prefill tokens out of the worker's load, its release
 * frees its blocks. The route's decision feeds the response headers.
 * Per-request overrides: annotations `router_overlap_weight` and
 * `router_temperature`.
 *
 * ```ts
 * const router = new KvRouter({ blockSize: 16, indexer });
 * const stream = client.generate(request, { router });
 * stream.route?.decision; // { workerId, cachedBlocks, ... }
 * ```
 */
export class KvRouter implements LlmRouter {
  readonly name: KvRouterMode;
  readonly mode: KvRouterMode;
  readonly indexer: KvIndexer;
  readonly active = new ActiveSequences();
  readonly scheduler: KvScheduler;
  readonly routerId: string;
  readonly modelName: string;
  private readonly books: RouterBookkeeping;
  private readonly clock: RouterClock;
  private readonly logger: Logger;
  private readonly loads: WorkerLoadTracker | undefined;
  private readonly replicaSync: ReplicaSync | undefined;
  private readonly metrics: RouterMetrics | undefined;
  private readonly maxRequestAgeMs: number;
  private readonly totalBlocks = new Map<string, number>();
  private readonly closers: (() => void | Promise<void>)[] = [];
  private lastExpiry = Number.NEGATIVE_INFINITY;
  private closed = false;

  constructor(options: KvRouterOptions) {
    this.mode = options.mode ?? "kv";
    if (this.mode !== "kv" && this.mode !== "kv-approx") {
      throw new TdistError("invalid_option", `mode must be "kv" or "kv-approx", got ${JSON.stringify(options.mode)}`);
    }
    this.name = this.mode;
    this.clock = options.clock ?? systemRouterClock;
    this.logger = options.logger ?? silentLogger;
    const approx = this.mode === "kv-approx";
    this.indexer =
      options.indexer ??
      new KvIndexer({
        blockSize: options.blockSize,
        clock: this.clock,
        logger: this.logger,
        ...(approx ? { ttlMs: options.approxTtlMs ?? DEFAULT_APPROX_TTL_MS } : {}),
        maxBlocks: options.maxBlocks ?? (approx ? DEFAULT_APPROX_MAX_BLOCKS : undefined),
        ...(options.pruneTargetRatio === undefined ? {} : { pruneTargetRatio: options.pruneTargetRatio }),
      });
    if (this.indexer.blockSize !== options.blockSize) {
      throw new TdistError(
        "invalid_option",
        `the indexer hashes blocks of ${this.indexer.blockSize} tokens, the router ${options.blockSize}`,
      );
    }
    this.scheduler = new KvScheduler(options.blockSize, options);
    this.maxRequestAgeMs = options.maxRequestAgeMs ?? DEFAULT_MAX_REQUEST_AGE_MS;
    if (!(this.maxRequestAgeMs > 0)) {
      throw new TdistError("invalid_option", `maxRequestAgeMs must be > 0, got ${String(options.maxRequestAgeMs)}`);
    }
    this.loads = options.loads;
    this.replicaSync = options.replicaSync;
    this.routerId = options.routerId ?? options.replicaSync?.routerId ?? Math.random().toString(16).slice(2, 14);
    this.books = new RouterBookkeeping(this.routerId);
    this.metrics = options.metrics;
    this.modelName = options.modelName ?? "unknown";
    if (this.metrics) {
      const model = this.modelName;
      this.closers.push(
        this.metrics.addLoadSource({
          model,
          predictedLoads: () => this.predictedLoads(),
        }),
      );
    }
  }

  get blockSize(): number {
    return this.indexer.blockSize;
  }

  /** Registers something to run on `close()` (subscriptions the factory opened). */
  onClose(closer: () => void | Promise<void>): void {
    this.closers.push(closer);
  }

  pick(instances: readonly Instance[], context: PickContext): Route<RoutingDecision> | undefined {
    const started = performance.now();
    const eligible = this.books.eligible(instances);
    if (eligible.length === 0) return undefined;
    const request = context.request;
    const tokens = requestTokens(request);
    const requestId = this.books.requestId(request);
    const overrides: { overlapWeight?: number; temperature?: number } = {};
    const overlapWeight = annotationNumber(request, ROUTER_OVERLAP_WEIGHT_ANNOTATION);
    const temperature = annotationNumber(request, ROUTER_TEMPERATURE_ANNOTATION);
    if (overlapWeight !== undefined) overrides.overlapWeight = overlapWeight;
    if (temperature !== undefined) overrides.temperature = temperature;

    const now = this.clock.now();
    if (now - this.lastExpiry >= 1_000) {
      this.lastExpiry = now;
      this.active.expire(now - this.maxRequestAgeMs);
    }
    const blockSize = this.blockSize;
    const blockHashes = computeBlockHashes(tokens, blockSize).map((block) => block.blockHash);
    const scores = this.indexer.findMatchesForHashes(blockHashes);
    const views: WorkerView[] = eligible.map((instance) => {
      const workerId = instance.instanceId;
      const predicted = this.active.load(workerId);
      const reported = this.loads?.get(workerId);
      const totalKvBlocks = reported?.totalKvBlocks ?? this.totalBlocks.get(workerId);
      return {
        workerId,
        overlapBlocks: scores.get(workerId) ?? 0,
        prefillTokens: predicted.prefillTokens,
        decodeBlocks: predicted.decodeBlocks,
        ...(reported === undefined ? {} : { reportedActiveBlocks: reported.activeKvBlocks }),
        activePrefixBlocks: this.active.activePrefix(workerId, blockHashes),
        ...(totalKvBlocks === undefined ? {} : { totalKvBlocks }),
      };
    });
    const result = this.scheduler.schedule(views, { tokens: tokens.length, blocks: blockHashes.length }, overrides);
    const chosen = views[result.index] as WorkerView;
    const workerId = chosen.workerId;
    // What the worker will compute: not what it holds, nor what it is computing for a request in flight.
    const prefillTokens = Math.max(0, tokens.length - cachedBlocksOf(chosen) * blockSize);

    const key = this.key(this.routerId, requestId);
    this.active.add({ key, workerId, blockHashes, prefillTokens, addedAt: now });
    this.replicaSync?.publish({
      type: "add",
      routerId: this.routerId,
      requestId,
      workerId,
      blockHashes,
      prefillTokens,
    });
    // Approximate mode: what we send is what the worker will cache.
    if (this.mode === "kv-approx") this.indexer.tree.store(workerId, null, blockHashes, now);
    const decision: RoutingDecision = {
      requestId,
      workerId,
      cachedBlocks: chosen.overlapBlocks,
      requestBlocks: blockHashes.length,
      policy: this.name,
      queuedPrefillTokens: chosen.prefillTokens,
    };
    this.books.observe(decision, this.metrics, this.modelName, started);
    return {
      instance: eligible[result.index] as Instance,
      decision,
      onFirstResponse: () => this.prefillDone(key, requestId),
      release: () => this.free(key, requestId),
    };
  }

  registerWorker(workerId: string, card: { kvBlockSize: number; limits?: { totalKvBlocks?: number } }): void {
    try {
      this.indexer.registerWorker(workerId, card);
    } catch (err) {
      this.books.refuse(workerId);
      this.logger.error({ err, workerId }, "worker refused by the KV router");
      throw err;
    }
    this.books.forget(workerId);
    const total = card.limits?.totalKvBlocks;
    if (total !== undefined) this.totalBlocks.set(workerId, total);
  }

  predictedLoads(): PredictedWorkerLoad[] {
    return this.active.workerIds().map((workerId) => ({ workerId, ...this.active.load(workerId) }));
  }

  removeWorker(workerId: string): void {
    this.indexer.removeWorker(workerId);
    this.active.removeWorker(workerId);
    this.loads?.remove(workerId);
    this.totalBlocks.delete(workerId);
    this.books.forget(workerId);
  }

  /** Applies another replica's active-sequence change. */
  applyReplicaEvent(event: ActiveSequenceEvent): void {
    const key = this.key(event.routerId, event.requestId);
    switch (event.type) {
      case "add":
        this.active.add({
          key,
          workerId: event.workerId,
          blockHashes: event.blockHashes,
          prefillTokens: event.prefillTokens,
          addedAt: this.clock.now(),
        });
        break;
      case "prefill_done":
        this.active.markPrefillDone(key);
        break;
      case "free":
        this.active.free(key);
        break;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const closer of this.closers.reverse()) {
      try {
        await closer();
      } catch (err) {
        this.logger.warn({ err }, "closing a KV router resource failed");
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The request's first output arrived: its prefill is done. */
  private prefillDone(key: string, requestId: string): void {
    if (!this.active.has(key)) return;
    this.active.markPrefillDone(key);
    this.replicaSync?.publish({ type: "prefill_done", routerId: this.routerId, requestId });
  }

  /** The request ended, however it ended. */
  private free(key: string, requestId: string): void {
    if (this.active.free(key)) this.replicaSync?.publish({ type: "free", routerId: this.routerId, requestId });
  }

  private key(routerId: string, requestId: string): string {
    return `${routerId}/${requestId}`;
  }
}
