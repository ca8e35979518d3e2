import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { DisaggregationMetrics } from "../disagg/disagg-metrics.js";
import { MigrationMetrics } from "./migration-metrics.js";

/**
 * The frontend's Prometheus metrics, named after Dynamo's `dynamo_frontend_*`
 * family so existing dashboards carry over. Each frontend has its own registry.
 */
export class FrontendMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"model" | "endpoint" | "request_type" | "status">;
  readonly inflight: Gauge<"model">;
  readonly requestDuration: Histogram<"model">;
  readonly timeToFirstToken: Histogram<"model">;
  readonly interTokenLatency: Histogram<"model">;
  readonly inputSequenceTokens: Histogram<"model">;
  readonly outputSequenceTokens: Histogram<"model">;
  readonly inputTokens: Counter<"model">;
  readonly outputTokens: Counter<"model">;
  readonly cachedTokens: Counter<"model">;
  readonly disconnects: Counter<"model">;
  /** Requests refused before any model ran: `unauthorized` (no or a wrong API key), `concurrency_limit` (429). */
  readonly rejectedRequests: Counter<"reason">;
  /** The prefill router's decisions, transfers and per-worker prefill queues. */
  readonly disaggregation: DisaggregationMetrics;
  /** Requests moved to another worker when theirs failed. */
  readonly migration: MigrationMetrics;

  constructor(prefix = "dynamo_frontend") {
    const registers = [this.registry];
    // Process health (RSS, event-loop lag, handles) beside the request metrics, so a soak or a dashboard reads one endpoint.
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: `${prefix}_requests_total`,
      help: "Requests handled, by model, endpoint, request type (stream/unary) and status (success/error)",
      labelNames: ["model", "endpoint", "request_type", "status"],
      registers,
    });
    this.inflight = new Gauge({
      name: `${prefix}_inflight_requests`,
      help: "Requests in flight",
      labelNames: ["model"],
      registers,
    });
    this.requestDuration = new Histogram({
      name: `${prefix}_request_duration_seconds`,
      help: "Request duration from arrival to the last byte",
      labelNames: ["model"],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: `${prefix}_time_to_first_token_seconds`,
      help: "Time from request arrival to the first generated token",
      labelNames: ["model"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: `${prefix}_inter_token_latency_seconds`,
      help: "Time between consecutive generated tokens",
      labelNames: ["model"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    this.inputSequenceTokens = new Histogram({
      name: `${prefix}_input_sequence_tokens`,
      help: "Prompt length in tokens",
      labelNames: ["model"],
      buckets: [16, 64, 256, 1024, 4096, 16384, 65536],
      registers,
    });
    this.outputSequenceTokens = new Histogram({
      name: `${prefix}_output_sequence_tokens`,
      help: "Generated length in tokens",
      labelNames: ["model"],
      buckets: [1, 16, 64, 256, 1024, 4096, 16384],
      registers,
    });
    this.inputTokens = new Counter({
      name: `${prefix}_input_tokens_total`,
      help: "Prompt tokens processed",
      labelNames: ["model"],
      registers,
    });
    this.outputTokens = new Counter({
      name: `${prefix}_output_tokens_total`,
      help: "Tokens generated",
      labelNames: ["model"],
      registers,
    });
    this.cachedTokens = new Counter({
      name: `${prefix}_cached_tokens_total`,
      help: "Prompt tokens served from the engines' prefix caches",
      labelNames: ["model"],
      registers,
    });
    this.disconnects = new Counter({
      name: `${prefix}_client_disconnects_total`,
      help: "Requests whose client disconnected before the response ended",
      labelNames: ["model"],
      registers,
    });
    this.rejectedRequests = new Counter({
      name: `${prefix}_rejected_requests_total`,
      help: "Requests refused before reaching a model, by reason (unauthorized, concurrency_limit)",
      labelNames: ["reason"],
      registers,
    });
    this.disaggregation = new DisaggregationMetrics(this.registry, prefix);
    this.migration = new MigrationMetrics(this.registry, prefix);
  }
}
