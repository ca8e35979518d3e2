import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { PredictedWorkerLoad } from "../kv-router/llm-router.js";
import type { DisaggregationOutcome } from "./disagg-policy.js";

/** Which pool a worker's load belongs to, as the `worker_type` label says it. */
export type WorkerType = "prefill" | "decode";

/** A router whose per-worker predicted load is read at scrape time. */
export interface PrefillQueueSource {
  readonly model: string;
  readonly workerType: WorkerType;
  predictedLoads(): readonly PredictedWorkerLoad[];
}

/**
 * The prefill router's Prometheus metrics, in the frontend's registry:
 *
 * - `{prefix}_disagg_decisions_total{model,outcome}`: one `remote`, `local`
 *   or `skipped_no_prefill_workers` per decided request, plus one `fallback`
 *   for each `remote` request that was prefilled on its decode worker after
 *   all (the prefill worker failed, or the decode worker could not fetch the
 *   KV cache);
 * - `{prefix}_disagg_kv_transfer_bytes_total{model}`: bytes of the KV caches
 *   decode workers fetched (the handles' byte counts);
 * - `{prefix}_disagg_kv_handoff_seconds{model}`: from the prefill worker's
 *   first token to the decode worker's first output (fetch, import and one
 *   decode step): what the split costs a request, as the frontend sees it;
 * - `{prefix}_worker_prefill_queue_tokens{model,worker,worker_type}`: the
 *   routers' predicted uncached prompt tokens waiting per worker.
 */
export class DisaggregationMetrics {
  readonly decisions: Counter<"model" | "outcome">;
  readonly kvTransferBytes: Counter<"model">;
  readonly handoffSeconds: Histogram<"model">;
  readonly prefillQueue: Gauge<"model" | "worker" | "worker_type">;
  private readonly sources = new Set<PrefillQueueSource>();

  constructor(registry: Registry, prefix = "dynamo_frontend") {
    const registers = [registry];
    this.decisions = new Counter({
      name: `${prefix}_disagg_decisions_total`,
      help: "Disaggregation decisions by outcome (fallback: remote requests prefilled on their decode worker after all)",
      labelNames: ["model", "outcome"],
      registers,
    });
    this.kvTransferBytes = new Counter({
      name: `${prefix}_disagg_kv_transfer_bytes_total`,
      help: "Bytes of KV cache decode workers fetched from prefill workers",
      labelNames: ["model"],
      registers,
    });
    this.handoffSeconds = new Histogram({
      name: `${prefix}_disagg_kv_handoff_seconds`,
      help: "From the prefill worker's first token to the decode worker's first output (KV fetch, import, one step)",
      labelNames: ["model"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    const sources = this.sources;
    this.prefillQueue = new Gauge({
      name: `${prefix}_worker_prefill_queue_tokens`,
      help: "Uncached prompt tokens the router predicts are waiting for prefill, per worker and worker type",
      labelNames: ["model", "worker", "worker_type"],
      registers,
      collect() {
        this.reset();
        for (const source of sources) {
          for (const load of source.predictedLoads()) {
            this.set(
              { model: source.model, worker: load.workerId, worker_type: source.workerType },
              load.prefillTokens,
            );
          }
        }
      },
    });
  }

  decided(model: string, outcome: DisaggregationOutcome): void {
    this.decisions.inc({ model, outcome });
  }

  /** Reads `source` at every scrape until the returned function is called. */
  addPrefillQueueSource(source: PrefillQueueSource): () => void {
    this.sources.add(source);
    return () => this.sources.delete(source);
  }
}
