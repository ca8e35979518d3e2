import type { Instance, PickContext, Route } from "@tdist/runtime";
import { TdistError } from "@tdist/runtime";
import { computeBlockHashes } from "../kv/block-hash.js";
import { ApproximateTreePolicy, type ApproximateTreePolicyOptions } from "./approximate-tree-policy.js";
import { type RoutingDecision, requestTokens } from "./llm-router.js";
import { RadixTree } from "./radix-tree.js";

export interface SglangCacheAwareOptions extends ApproximateTreePolicyOptions {
  /** Minimum prefix match ratio for cache-affinity routing (`--cache-threshold`). Default 0.3. */
  cacheThreshold?: number;
  /** Load imbalance gate, absolute (`--balance-abs-threshold`). Default 64. */
  balanceAbsThreshold?: number;
  /** Load imbalance gate, relative (`--balance-rel-threshold`). Default 1.5. */
  balanceRelThreshold?: number;
  /** Bound of the approximate tree in memberships; the least recently used go first. Default 2^22. */
  maxTreeBlocks?: number;
}

/** How the policy decided, for tests and debugging. */
export type SglangDecisionRule = "imbalanced-least-loaded" | "best-prefix-match" | "smallest-tree";

/**
 * SGLang router's `cache_aware` policy (also vLLM router's default), as its
 * documentation describes it:
 *
 * - an approximate radix tree per worker of the prompts routed to it (no
 *   engine events; bounded by LRU eviction);
 * - load = requests the router has in flight to the worker;
 * - if the load is imbalanced — `max - min > balanceAbsThreshold` AND
 *   `max > min * balanceRelThreshold` — route to the least-loaded worker;
 * - else if the best prefix match ratio (matched prompt tokens / prompt
 *   tokens) is above `cacheThreshold`, route to the worker with that match;
 * - else route to the worker with the smallest tree (most free cache).
 *
 * The prompt is then inserted into the chosen worker's tree. Upstream
 * matches characters of text; here the tree is over the same token blocks
 * the engines cache, so the ratio is in whole blocks. "Above" is strict (`>`),
 * as upstream compares.
 */
export class SglangCacheAwarePolicy extends ApproximateTreePolicy {
  readonly cacheThreshold: number;
  readonly balanceAbsThreshold: number;
  readonly balanceRelThreshold: number;
  /** The rule behind the most recent decision. */
  lastRule: SglangDecisionRule | undefined;

  constructor(options: SglangCacheAwareOptions) {
    super(
      "sglang",
      new RadixTree({ ...(options?.maxTreeBlocks === undefined ? {} : { maxBlocks: options.maxTreeBlocks }) }),
      options,
    );
    this.cacheThreshold = options.cacheThreshold ?? 0.3;
    this.balanceAbsThreshold = options.balanceAbsThreshold ?? 64;
    this.balanceRelThreshold = options.balanceRelThreshold ?? 1.5;
    if (!(this.cacheThreshold >= 0 && this.cacheThreshold <= 1)) {
      throw new TdistError("invalid_option", `cacheThreshold must be in [0, 1], got ${String(options.cacheThreshold)}`);
    }
    if (!(this.balanceAbsThreshold >= 0) || !(this.balanceRelThreshold >= 1)) {
      throw new TdistError("invalid_option", "balanceAbsThreshold must be >= 0 and balanceRelThreshold >= 1");
    }
  }

  pick(instances: readonly Instance[], context: PickContext): Route<RoutingDecision> | undefined {
    const started = performance.now();
    const eligible = this.books.eligible(instances);
    if (eligible.length === 0) return undefined;
    const tokens = requestTokens(context.request);
    const loads = eligible.map((instance) => context.inFlight(instance.instanceId));
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (const load of loads) {
      if (load < min) min = load;
      if (load > max) max = load;
    }
    const blockHashes = computeBlockHashes(tokens, this.blockSize).map((block) => block.blockHash);
    const matches = this.tree.findMatches(blockHashes);
    let chosen: number;
    let rule: SglangDecisionRule;
    if (max - min > this.balanceAbsThreshold && max > min * this.balanceRelThreshold) {
      rule = "imbalanced-least-loaded";
      chosen = argBest(loads, (a, b) => a < b);
    } else {
      const matched = eligible.map((instance) => matches.get(instance.instanceId) ?? 0);
      const best = Math.max(...matched);
      const ratio = tokens.length === 0 ? 0 : (best * this.blockSize) / tokens.length;
      if (ratio > this.cacheThreshold) {
        rule = "best-prefix-match";
        // Among equally long matches, the less loaded one.
        chosen = argBest(
          matched.map((m, i) => (m === best ? (loads[i] as number) : Number.POSITIVE_INFINITY)),
          (a, b) => a < b,
        );
      } else {
        rule = "smallest-tree";
        chosen = argBest(
          eligible.map((instance) => this.tree.blockCount(instance.instanceId)),
          (a, b) => a < b,
        );
      }
    }
    const instance = eligible[chosen] as Instance;
    this.lastRule = rule;
    const cachedBlocks = matches.get(instance.instanceId) ?? 0;
    return this.routeTo(instance, context, blockHashes, cachedBlocks, started);
  }
}

/** Index of the best value (first among equals). */
function argBest(values: readonly number[], better: (a: number, b: number) => boolean): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (better(values[i] as number, values[best] as number)) best = i;
  return best;
}
