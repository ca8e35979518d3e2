import { Counter, Histogram, type Registry } from "prom-client";

/** Why a request moved to another worker: it never got going (`new_request`) or broke mid-stream (`ongoing_request`). */
export type MigrationType = "new_request" | "ongoing_request";

/** Dynamo's request-migration metrics, on the frontend's registry. */
export class MigrationMetrics {
  readonly migrations: Counter<"model" | "migration_type">;
  /** From the failure to the replacement worker's first output: how long the client's stream stalled. */
  readonly duration: Histogram<"model">;

  constructor(registry: Registry, prefix = "dynamo_frontend") {
    const registers = [registry];
    this.migrations = new Counter({
      name: `${prefix}_model_migration_total`,
      help: "Requests re-issued to another worker after theirs failed, by model and migration type",
      labelNames: ["model", "migration_type"],
      registers,
    });
    this.duration = new Histogram({
      name: `${prefix}_model_migration_duration_seconds`,
      help: "Time from a worker's failure to the first output of the worker the request moved to",
      labelNames: ["model"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
  }
}
