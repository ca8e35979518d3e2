import type { Instance, PickContext, Route } from "@tdist/runtime";
import { TdistError } from "@tdist/runtime";
import { computeBlockHashes } from "../kv/block-hash.js";
import { ApproximateTreePolicy, type ApproximateTreePolicyOptions } from "./approximate-tree-policy.js";
import { type RoutingDecision, requestTokens } from "./llm-router.js";
import { RadixTree } from "./radix-tree.js";
import type { WorkerLoadTracker } from "./worker-load-tracker.js";

export interface LlmdScorerWeights {
  /** prefix-cache-scorer. Default 3. */
  prefix: number;
  /** queue-scorer. Default 2. */
  queue: number;
  /** kv-cache-utilization-scorer. Default 2. */
  kvUtilization: number;
}

export interface LlmdWeightedScorerOptions extends ApproximateTreePolicyOptions {
  weights?: Partial<LlmdScorerWeights>;
  /** Where the workers' reported queue and KV utilisation come from. */
  loads: WorkerLoadTracker;
  /** Capacity of the approximate prefix index per worker, in blocks (llm-d's `lruCapacityPerServer`). Default 31 250. */
  lruCapacityPerWorker?: number;
  rng?: () => number;
}

/** One worker's scores, for tests and debugging. */
export interface LlmdScores {
  workerId: string;
  prefix: number;
  queue: number;
  kvUtilization: number;
  total: number;
}

/**
 * An llm-d inference-scheduler style weighted scorer, with the default
 * profile's plugins and weights:
 *
 * - **prefix-cache-scorer** (weight 3): matched leading blocks / prompt
 *   blocks, against an approximate index of the prompts routed to each worker
 *   (a per-worker LRU of `lruCapacityPerWorker` blocks, as llm-d's default
 *   prefix plugin; no engine events);
 * - **queue-scorer** (weight 2): the worker's reported waiting requests,
 *   min-max normalised over the candidates: `(max - q) / (max - min)`, 1 when
 *   all are equal;
 * - **kv-cache-utilization-scorer** (weight 2): `1 - kvUsage` as reported;
 *
 * and the max-score picker (random among equal totals). Workers that have
 * not reported load yet score as empty.
 */
export class LlmdWeightedScorerPolicy extends ApproximateTreePolicy {
  readonly weights: LlmdScorerWeights;
  /** Scores behind the most recent decision. */
  lastScores: LlmdScores[] = [];
  private readonly loads: WorkerLoadTracker;
  private readonly rng: () => number;

  constructor(options: LlmdWeightedScorerOptions) {
    super("llm-d", new RadixTree({ maxBlocksPerWorker: lruCapacity(options) }), options);
    this.weights = { prefix: 3, queue: 2, kvUtilization: 2, ...options.weights };
    for (const [name, weight] of Object.entries(this.weights)) {
      if (typeof weight !== "number" || !(weight >= 0)) {
        throw new TdistError("invalid_option", `weights.${name} must be a number >= 0, got ${String(weight)}`);
      }
    }
    this.loads = options.loads;
    this.rng = options.rng ?? Math.random;
  }

  /** Scores every candidate (exposed for tests). */
  score(workerIds: readonly string[], blockHashes: readonly string[]): LlmdScores[] {
    const matches = this.tree.findMatches(blockHashes);
    const queues = workerIds.map((id) => this.loads.get(id)?.waitingSequences ?? 0);
    const minQueue = Math.min(...queues);
    const maxQueue = Math.max(...queues);
    return workerIds.map((workerId, i) => {
      const prefix = blockHashes.length === 0 ? 0 : (matches.get(workerId) ?? 0) / blockHashes.length;
      const queue = maxQueue === minQueue ? 1 : (maxQueue - (queues[i] as number)) / (maxQueue - minQueue);
      const kvUtilization = 1 - Math.min(1, Math.max(0, this.loads.get(workerId)?.kvUsage ?? 0));
      const total =
        this.weights.prefix * prefix + this.weights.queue * queue + this.weights.kvUtilization * kvUtilization;
      return { workerId, prefix, queue, kvUtilization, total };
    });
  }

  pick(instances: readonly Instance[], context: PickContext): Route<RoutingDecision> | undefined {
    const started = performance.now();
    const eligible = this.books.eligible(instances);
    if (eligible.length === 0) return undefined;
    const tokens = requestTokens(context.request);
    const blockHashes = computeBlockHashes(tokens, this.blockSize).map((block) => block.blockHash);
    const scores = this.score(
      eligible.map((instance) => instance.instanceId),
      blockHashes,
    );
    let best = 0;
    let ties = 1;
    for (let i = 1; i < scores.length; i++) {
      const total = (scores[i] as LlmdScores).total;
      const bestTotal = (scores[best] as LlmdScores).total;
      if (total > bestTotal) {
        best = i;
        ties = 1;
      } else if (total === bestTotal) {
        ties++;
        if (this.rng() * ties < 1) best = i;
      }
    }
    const instance = eligible[best] as Instance;
    this.lastScores = scores;
    const cachedBlocks = Math.round((scores[best] as LlmdScores).prefix * blockHashes.length);
    return this.routeTo(instance, context, blockHashes, cachedBlocks, started);
  }

  override removeWorker(workerId: string): void {
    super.removeWorker(workerId);
    this.loads.remove(workerId);
  }
}

/** llm-d's per-worker prefix LRU capacity, in blocks. */
function lruCapacity(options: LlmdWeightedScorerOptions): number {
  const capacity = options?.lruCapacityPerWorker ?? 31_250;
  if (!Number.isInteger(capacity) || capacity < 1) {
    throw new TdistError("invalid_option", "lruCapacityPerWorker must be a positive integer");
  }
  return capacity;
}
