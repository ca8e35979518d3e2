import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** A router that can report its predicted per-worker load at scrape time. */
export interface PredictedLoadSource {
  readonly model: string;
  predictedLoads(): { workerId: string; prefillTokens: number; decodeBlocks: number }[];
}

/**
 * The routers' Prometheus metrics, one set per registry (several models'
 * routers share it, told apart by the `model` label):
 *
 * - `{prefix}_decisions_total{model,policy}`
 * - `{prefix}_kv_request_blocks_total{model}`, `{prefix}_kv_overlap_blocks_total{model}`:
 *   the KV hit rate is their ratio (`rate(overlap) / rate(request)`)
 * - `{prefix}_kv_hit_rate{model}`: per-request overlap / prompt blocks (histogram)
 * - `{prefix}_overlap_blocks{model}`: per-request overlap blocks (histogram)
 * - `{prefix}_decision_seconds{model,policy}`: time to decide (histogram)
 * - `{prefix}_kv_event_gaps_total{model}`: gaps in a worker's KV event ids
 *   (events lost; the worker was asked to resync)
 * - `{prefix}_kv_malformed_events_total{model}`: messages on the KV event
 *   subject that were not KV events (skipped; logged at most once per worker a second)
 * - `{prefix}_worker_predicted_prefill_tokens{model,worker}` and
 *   `{prefix}_worker_predicted_decode_blocks{model,worker}`: read from the routers at scrape time
 *
 * ```ts
 * const metrics = RouterMetrics.forRegistry(frontend.metrics.registry);
 * ```
 */
export class RouterMetrics {
  private static readonly byRegistry = new WeakMap<Registry, Map<string, RouterMetrics>>();
  readonly decisions: Counter<"model" | "policy">;
  readonly requestBlocks: Counter<"model">;
  readonly overlapBlocks: Counter<"model">;
  readonly hitRate: Histogram<"model">;
  readonly overlapBlocksPerRequest: Histogram<"model">;
  readonly decisionSeconds: Histogram<"model" | "policy">;
  readonly kvEventGaps: Counter<"model">;
  readonly kvMalformedEvents: Counter<"model">;
  readonly predictedPrefillTokens: Gauge<"model" | "worker">;
  readonly predictedDecodeBlocks: Gauge<"model" | "worker">;
  private readonly sources = new Set<PredictedLoadSource>();

  private constructor(registry: Registry, prefix: string) {
    const registers = [registry];
    this.decisions = new Counter({
      name: `${prefix}_decisions_total`,
      help: "Routing decisions made, by model and policy",
      labelNames: ["model", "policy"],
      registers,
    });
    this.requestBlocks = new Counter({
      name: `${prefix}_kv_request_blocks_total`,
      help: "Full prompt blocks of routed requests",
      labelNames: ["model"],
      registers,
    });
    this.overlapBlocks = new Counter({
      name: `${prefix}_kv_overlap_blocks_total`,
      help: "Prompt blocks the chosen worker was believed to hold (KV hit rate = this / request blocks)",
      labelNames: ["model"],
      registers,
    });
    this.hitRate = new Histogram({
      name: `${prefix}_kv_hit_rate`,
      help: "Per request: leading prompt blocks the chosen worker holds / full prompt blocks",
      labelNames: ["model"],
      buckets: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
      registers,
    });
    this.overlapBlocksPerRequest = new Histogram({
      name: `${prefix}_overlap_blocks`,
      help: "Per request: leading prompt blocks the chosen worker holds",
      labelNames: ["model"],
      buckets: [0, 1, 4, 16, 64, 256, 1024, 4096],
      registers,
    });
    this.decisionSeconds = new Histogram({
      name: `${prefix}_decision_seconds`,
      help: "Time to make one routing decision (hashing, matching, scheduling)",
      labelNames: ["model", "policy"],
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01],
      registers,
    });
    this.kvEventGaps = new Counter({
      name: `${prefix}_kv_event_gaps_total`,
      help: "Gaps in a worker's KV event ids: events were lost and the worker was asked to resync",
      labelNames: ["model"],
      registers,
    });
    this.kvMalformedEvents = new Counter({
      name: `${prefix}_kv_malformed_events_total`,
      help: "Messages on the KV event subject that were not KV events (not JSON, wrong types, bad hashes): skipped",
      labelNames: ["model"],
      registers,
    });
    this.predictedPrefillTokens = predictedLoadGauge(
      this.sources,
      `${prefix}_worker_predicted_prefill_tokens`,
      "Uncached prompt tokens the router predicts are waiting for prefill on the worker",
      registers,
      "prefillTokens",
    );
    this.predictedDecodeBlocks = predictedLoadGauge(
      this.sources,
      `${prefix}_worker_predicted_decode_blocks`,
      "KV blocks the router predicts the worker's active requests occupy",
      registers,
      "decodeBlocks",
    );
  }

  /** The metrics of `registry` (created on first use; one set per registry and prefix). */
  static forRegistry(registry: Registry, prefix = "tdist_router"): RouterMetrics {
    let byPrefix = RouterMetrics.byRegistry.get(registry);
    if (byPrefix === undefined) {
      byPrefix = new Map();
      RouterMetrics.byRegistry.set(registry, byPrefix);
    }
    let metrics = byPrefix.get(prefix);
    if (metrics === undefined) {
      metrics = new RouterMetrics(registry, prefix);
      byPrefix.set(prefix, metrics);
    }
    return metrics;
  }

  /** Records one decision. */
  observe(model: string, policy: string, requestBlocks: number, overlapBlocks: number, seconds: number): void {
    this.decisions.inc({ model, policy });
    this.requestBlocks.inc({ model }, requestBlocks);
    this.overlapBlocks.inc({ model }, overlapBlocks);
    if (requestBlocks > 0) this.hitRate.observe({ model }, overlapBlocks / requestBlocks);
    this.overlapBlocksPerRequest.observe({ model }, overlapBlocks);
    this.decisionSeconds.observe({ model, policy }, seconds);
  }

  /** Reports a router's predicted loads at scrape time until the returned function is called. */
  addLoadSource(source: PredictedLoadSource): () => void {
    this.sources.add(source);
    return () => this.sources.delete(source);
  }
}

/** A per-worker gauge of one predicted-load field, read from the sources at scrape time. */
function predictedLoadGauge(
  sources: ReadonlySet<PredictedLoadSource>,
  name: string,
  help: string,
  registers: Registry[],
  field: "prefillTokens" | "decodeBlocks",
): Gauge<"model" | "worker"> {
  return new Gauge({
    name,
    help,
    labelNames: ["model", "worker"],
    registers,
    collect() {
      this.reset();
      for (const source of sources) {
        for (const load of source.predictedLoads())
          this.set({ model: source.model, worker: load.workerId }, load[field]);
      }
    },
  });
}
