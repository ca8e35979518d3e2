import { Counter, type Registry } from "prom-client";

/**
 * Counts of discovery records a frontend skipped, one set per registry:
 *
 * - `tdist_discovery_malformed_records_total{kind}`: `instance` records and
 *   `model_card`s that were not valid (the runtime has no metrics registry of
 *   its own, so its clients report through `onMalformedRecord`);
 * - `dynamo_frontend_malformed_model_cards_total`: model cards refused, as
 *   not valid or as naming a tokenizer that failed verification.
 *
 * ```ts
 * const metrics = MalformedRecordMetrics.forRegistry(frontend.metrics.registry);
 * metrics.records.inc({ kind: "instance" });
 * ```
 */
export class MalformedRecordMetrics {
  private static readonly byRegistry = new WeakMap<Registry, MalformedRecordMetrics>();
  readonly records: Counter<"kind">;
  readonly modelCards: Counter;

  private constructor(registry: Registry) {
    const registers = [registry];
    this.records = new Counter({
      name: "tdist_discovery_malformed_records_total",
      help: "Discovery records skipped as malformed, by kind (instance, model_card)",
      labelNames: ["kind"],
      registers,
    });
    this.modelCards = new Counter({
      name: "dynamo_frontend_malformed_model_cards_total",
      help: "Model cards refused: not valid, or their tokenizer failed verification",
      registers,
    });
  }

  static forRegistry(registry: Registry): MalformedRecordMetrics {
    let metrics = MalformedRecordMetrics.byRegistry.get(registry);
    if (metrics === undefined) {
      metrics = new MalformedRecordMetrics(registry);
      MalformedRecordMetrics.byRegistry.set(registry, metrics);
    }
    return metrics;
  }

  /** One instance record skipped. */
  instance(): void {
    this.records.inc({ kind: "instance" });
  }

  /** One model card refused; `invalid` when the card itself was not valid (not only its tokenizer). */
  modelCard(invalid: boolean): void {
    if (invalid) this.records.inc({ kind: "model_card" });
    this.modelCards.inc();
  }
}
