import type { Instance, PickContext, Route } from "@tdist/runtime";
import { TdistError } from "@tdist/runtime";
import { type LlmRouter, RouterBookkeeping, type RoutingDecision } from "./llm-router.js";
import type { RadixTree } from "./radix-tree.js";
import { type RouterClock, systemRouterClock } from "./router-clock.js";
import type { RouterMetrics } from "./router-metrics.js";

/** What every approximate-tree policy takes. */
export interface ApproximateTreePolicyOptions {
  /** Tokens per block of the approximate tree (use the model card's `kvBlockSize`). */
  blockSize: number;
  metrics?: RouterMetrics;
  modelName?: string;
  clock?: RouterClock;
}

/**
 * The shared half of the peer policies (SGLang's, llm-d's): an approximate
 * radix tree of the prompts the router sent to each worker (no engine
 * events), decision metrics, and worker registration. A subclass chooses
 * the worker in `pick` and hands it to `routeTo`.
 */
export abstract class ApproximateTreePolicy implements LlmRouter {
  readonly blockSize: number;
  protected readonly books: RouterBookkeeping;
  protected readonly clock: RouterClock;
  private readonly metrics: RouterMetrics | undefined;
  private readonly modelName: string;

  protected constructor(
    readonly name: string,
    readonly tree: RadixTree,
    options: ApproximateTreePolicyOptions,
  ) {
    if (!Number.isInteger(options?.blockSize) || options.blockSize < 1) {
      throw new TdistError("invalid_option", `blockSize must be a positive integer, got ${String(options?.blockSize)}`);
    }
    this.blockSize = options.blockSize;
    this.books = new RouterBookkeeping(name);
    this.clock = options.clock ?? systemRouterClock;
    this.metrics = options.metrics;
    this.modelName = options.modelName ?? "unknown";
  }

  abstract pick(instances: readonly Instance[], context: PickContext): Route<RoutingDecision> | undefined;

  /** Records the prompt in the chosen worker's tree, counts the decision, and returns the route to the worker. */
  protected routeTo(
    instance: Instance,
    context: PickContext,
    blockHashes: readonly string[],
    cachedBlocks: number,
    startedMs: number,
  ): Route<RoutingDecision> {
    const workerId = instance.instanceId;
    this.tree.store(workerId, null, blockHashes, this.clock.now());
    const decision: RoutingDecision = {
      requestId: this.books.requestId(context.request),
      workerId,
      cachedBlocks,
      requestBlocks: blockHashes.length,
      policy: this.name,
    };
    this.books.observe(decision, this.metrics, this.modelName, startedMs);
    // Load here is the client's in-flight count, which the client keeps itself: no hooks.
    return { instance, decision };
  }

  registerWorker(workerId: string, card: { kvBlockSize: number }): void {
    this.books.admit(workerId, this.blockSize, card);
  }

  removeWorker(workerId: string): void {
    this.tree.removeWorker(workerId);
    this.books.forget(workerId);
  }

  async close(): Promise<void> {}
}
