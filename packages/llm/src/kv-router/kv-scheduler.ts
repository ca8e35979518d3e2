import { TdistError } from "@tdist/runtime";

/**
 * When a worker counts as busy (each threshold is off unless set): busy
 * workers are skipped, and when every worker is busy the request is shed
 * with `all_workers_busy` (HTTP 503), as Dynamo's
 * `--active-decode-blocks-threshold` / `--active-prefill-tokens-threshold`.
 */
export interface BusyThresholds {
  /** Fraction [0, 1] of the worker's total KV blocks in active use above which it is busy. */
  activeDecodeBlocks?: number;
  /** Uncached prompt tokens waiting for prefill above which it is busy. */
  activePrefillTokens?: number;
}

/**
 * Default weight of a prefill block against an active (decode) block: 16,
 * not Dynamo's 1. The two terms count blocks but cost very different
 * things: a prefill block is `blockSize` tokens of compute on the TTFT path
 * of the request and of every request queued behind it, while an active
 * block adds one block read to each decode step (vLLM-like timings, as in the
 * mocker's model: 0.035 ms per prefill token against 0.0015 ms per active
 * block per step). At weight 1 a load gap of a few hundred blocks (a few
 * percent of one worker's cache) outweighs a whole cached conversation, and
 * conversations leave their cache. Measured on bench/routing (both
 * workloads), weights 12 to 24 tie for the best TTFT p90; 8 loses the prefix
 * p90 (30.6 ms against 24.2) and 32 and up start to cost ITL and throughput.
 */
export const DEFAULT_OVERLAP_WEIGHT = 16;

export interface KvSchedulerOptions {
  /** Weight of prefill blocks against decode blocks. 0 = pure load balancing. Default 16 ({@link DEFAULT_OVERLAP_WEIGHT}). */
  overlapWeight?: number;
  /** 0 = lowest cost (random among ties); > 0 = softmax sampling over normalised costs. Default 0. */
  temperature?: number;
  busyThresholds?: BusyThresholds;
  /** Uniform [0, 1) source, for tie-breaks and sampling. Default Math.random. */
  rng?: () => number;
}

/** What the scheduler knows about one candidate worker for one request. */
export interface WorkerView {
  workerId: string;
  /** Leading prompt blocks the worker holds (from the indexer). */
  overlapBlocks: number;
  /** Uncached prompt tokens already waiting for prefill there (predicted from routed requests). */
  prefillTokens: number;
  /** KV blocks its active requests occupy (predicted from routed requests). */
  decodeBlocks: number;
  /** Active KV blocks the engine last reported: a lagging snapshot, read only for the busy threshold. */
  reportedActiveBlocks?: number;
  /** Leading prompt blocks already in use by its active requests (they add no decode blocks). */
  activePrefixBlocks: number;
  /** The worker's KV capacity, when known (for the busy threshold). */
  totalKvBlocks?: number;
}

export interface WorkerCost {
  workerId: string;
  /** `overlapWeight * prefillBlocks + decodeBlocks`: lower is better. */
  cost: number;
  /** Prefill the worker would have queued with this request, in blocks. */
  prefillBlocks: number;
  /** Blocks the worker would hold in active use with this request. */
  decodeBlocks: number;
  busy: boolean;
}

export interface ScheduleResult {
  workerId: string;
  /** Index of the chosen worker in the input. */
  index: number;
  costs: WorkerCost[];
}

export interface ResolvedKvSchedulerOptions {
  overlapWeight: number;
  temperature: number;
  busyThresholds: BusyThresholds;
  rng: () => number;
}

function nonNegative(option: string, value: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new TdistError("invalid_option", `${option} must be a finite number >= 0, got ${String(value)}`);
  }
  return value;
}

export function resolveKvSchedulerOptions(options: KvSchedulerOptions = {}): ResolvedKvSchedulerOptions {
  const busy = options.busyThresholds ?? {};
  if (busy.activeDecodeBlocks !== undefined) {
    const v = busy.activeDecodeBlocks;
    if (typeof v !== "number" || !(v >= 0 && v <= 1)) {
      throw new TdistError("invalid_option", `busyThresholds.activeDecodeBlocks must be in [0, 1], got ${String(v)}`);
    }
  }
  if (busy.activePrefillTokens !== undefined)
    nonNegative("busyThresholds.activePrefillTokens", busy.activePrefillTokens);
  return {
    overlapWeight: nonNegative("overlapWeight", options.overlapWeight ?? DEFAULT_OVERLAP_WEIGHT),
    temperature: nonNegative("temperature", options.temperature ?? 0),
    busyThresholds: { ...busy },
    rng: options.rng ?? Math.random,
  };
}

/**
 * The cost of sending a request of `requestTokens` tokens (`requestBlocks`
 * full blocks) to each worker, as Dynamo's KV router computes it, except
 * that a prefix shared with the worker's requests in flight
 * (`activePrefixBlocks`) counts as cached even before its KV events arrive:
 * the worker computes it once, and a request sent there next finds it.
 *
 * ```
 * cachedBlocks  = max(overlapBlocks, activePrefixBlocks)
 * prefillBlocks = (prefillTokens + requestTokens - cachedBlocks * blockSize) / blockSize
 * decodeBlocks  = decodeBlocks + (requestBlocks - activePrefixBlocks) + 1
 * cost          = overlapWeight * prefillBlocks + decodeBlocks
 * ```
 */
/**
 * Leading prompt blocks a worker will not compute: those its KV events say
 * it holds, or those a request in flight there is computing, whichever is more.
 */
export function cachedBlocksOf(worker: Pick<WorkerView, "overlapBlocks" | "activePrefixBlocks">): number {
  return Math.max(worker.overlapBlocks, worker.activePrefixBlocks);
}

export function workerCosts(
  workers: readonly WorkerView[],
  request: { tokens: number; blocks: number },
  blockSize: number,
  overlapWeight: number,
  busy: BusyThresholds = {},
): WorkerCost[] {
  return workers.map((worker) => {
    const newPrefillTokens = Math.max(0, request.tokens - cachedBlocksOf(worker) * blockSize);
    const prefillBlocks = (worker.prefillTokens + newPrefillTokens) / blockSize;
    const newBlocks = Math.max(0, request.blocks - worker.activePrefixBlocks) + 1;
    const decodeBlocks = worker.decodeBlocks + newBlocks;
    const isBusy =
      (busy.activeDecodeBlocks !== undefined &&
        worker.totalKvBlocks !== undefined &&
        worker.totalKvBlocks > 0 &&
        Math.max(worker.decodeBlocks, worker.reportedActiveBlocks ?? 0) / worker.totalKvBlocks >
          busy.activeDecodeBlocks) ||
      (busy.activePrefillTokens !== undefined && worker.prefillTokens > busy.activePrefillTokens);
    return {
      workerId: worker.workerId,
      cost: overlapWeight * prefillBlocks + decodeBlocks,
      prefillBlocks,
      decodeBlocks,
      busy: isBusy,
    };
  });
}

/**
 * Picks among `costs` (lower is better): temperature 0 takes the minimum,
 * a tie broken uniformly at random; temperature > 0 samples with
 * `p_i ∝ exp(-normalised_i / temperature)`, costs normalised to [0, 1]
 * (all equal: uniform). Returns an index into `costs`.
 */
export function selectByCost(costs: readonly number[], temperature: number, rng: () => number): number {
  if (costs.length === 0) throw new TdistError("internal", "selectByCost needs at least one cost");
  if (temperature === 0) {
    let best = 0;
    let ties = 1;
    for (let i = 1; i < costs.length; i++) {
      const c = costs[i] as number;
      const b = costs[best] as number;
      if (c < b) {
        best = i;
        ties = 1;
      } else if (c === b) {
        ties++;
        // Reservoir sampling: each tied index ends up chosen with probability 1/ties.
        if (rng() * ties < 1) best = i;
      }
    }
    return best;
  }
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const c of costs) {
    if (c < min) min = c;
    if (c > max) max = c;
  }
  const range = max - min;
  const weights = costs.map((c) => (range === 0 ? 1 : Math.exp(-((c - min) / range) / temperature)));
  const total = weights.reduce((a, b) => a + b, 0);
  let draw = rng() * total;
  for (let i = 0; i < weights.length; i++) {
    draw -= weights[i] as number;
    if (draw < 0) return i;
  }
  return weights.length - 1;
}

/**
 * The KV router's scheduler: costs every candidate, leaves out busy workers
 * (unless all are busy), and selects by temperature. Per-request overrides
 * of the weight and temperature come in `schedule`'s `overrides`.
 */
export class KvScheduler {
  readonly options: ResolvedKvSchedulerOptions;

  constructor(
    readonly blockSize: number,
    options: KvSchedulerOptions = {},
  ) {
    this.options = resolveKvSchedulerOptions(options);
  }

  schedule(
    workers: readonly WorkerView[],
    request: { tokens: number; blocks: number },
    overrides: { overlapWeight?: number; temperature?: number } = {},
  ): ScheduleResult {
    if (workers.length === 0) throw new TdistError("no_instances", "no worker to schedule on");
    const overlapWeight = overrides.overlapWeight ?? this.options.overlapWeight;
    const temperature = overrides.temperature ?? this.options.temperature;
    const costs = workerCosts(workers, request, this.blockSize, overlapWeight, this.options.busyThresholds);
    const pool: number[] = [];
    for (let i = 0; i < costs.length; i++) if (!(costs[i] as WorkerCost).busy) pool.push(i);
    if (pool.length === 0) {
      const { activeDecodeBlocks, activePrefillTokens } = this.options.busyThresholds;
      throw new TdistError(
        "all_workers_busy",
        `all ${workers.length} workers are busy (active decode blocks over ${activeDecodeBlocks ?? "-"} of capacity ` +
          `or prefill tokens over ${activePrefillTokens ?? "-"}); retry later`,
      );
    }
    const chosen = pool[
      selectByCost(
        pool.map((i) => (costs[i] as WorkerCost).cost),
        temperature,
        this.options.rng,
      )
    ] as number;
    return { workerId: (workers[chosen] as WorkerView).workerId, index: chosen, costs };
  }
}
