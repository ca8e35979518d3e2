import { serveEchoWorker } from "@tdist/engine-echo";
import { serveLlamaCppWorker } from "@tdist/engine-llamacpp";
import { serveMockerWorker } from "@tdist/engine-mocker";
import type { ServedModel, WorkerRole } from "@tdist/llm";
import { type DistributedRuntime, TdistError } from "@tdist/runtime";

export const ENGINES = ["llamacpp", "mocker", "echo"] as const;
export type EngineKind = (typeof ENGINES)[number];

export interface WorkerSpec {
  engine: EngineKind;
  namespace: string;
  modelName?: string | undefined;
  /** echo: delay per token in ms. */
  delayMs?: number | undefined;
  /** mocker: timing speed-up factor. */
  speedup?: number | undefined;
  /** llamacpp: a GGUF path or `hf:<user>/<repo>/<file>`; default the built-in tiny model. */
  model?: string | undefined;
  /** llamacpp: CPU threads (default suits small machines). */
  threads?: number | undefined;
  /** llamacpp: sequences (concurrent requests) in one context. */
  sequences?: number | undefined;
  /**
   * llamacpp: publish KV events and load metrics for the KV-aware routers.
   * Default true; the mocker always publishes (it exists to feed routers).
   */
  kvEvents?: boolean | undefined;
  /** Disaggregated serving role (`--mode`); default aggregated. Not for echo, which has no KV cache to hand over. */
  role?: WorkerRole | undefined;
  /** mocker: prefill-to-decode bandwidth in GB/s for the simulated transfer time. */
  kvTransferGbps?: number | undefined;
  /** mocker: KV cache bytes per token for the simulated transfer time. */
  kvBytesPerToken?: number | undefined;
  /** The card's `migrationLimit` (`--migration-limit`); frontends default to 3 without it. */
  migrationLimit?: number | undefined;
}

export function parseEngine(value: string | undefined): EngineKind {
  const engine = value ?? "llamacpp";
  if (!(ENGINES as readonly string[]).includes(engine)) {
    throw new TdistError(
      "invalid_option",
      `--engine must be one of ${ENGINES.join(", ")}, got ${JSON.stringify(engine)}`,
    );
  }
  return engine as EngineKind;
}

/** Starts one model worker of the given engine on `runtime`. */
export async function startWorker(runtime: DistributedRuntime, spec: WorkerSpec): Promise<ServedModel> {
  switch (spec.engine) {
    case "echo":
      return serveEchoWorker(runtime, {
        namespace: spec.namespace,
        ...(spec.modelName ? { modelName: spec.modelName } : {}),
        ...(spec.delayMs !== undefined ? { delayMsPerToken: spec.delayMs } : {}),
        ...(spec.migrationLimit !== undefined ? { migrationLimit: spec.migrationLimit } : {}),
      });
    case "llamacpp":
      return serveLlamaCppWorker(runtime, {
        namespace: spec.namespace,
        ...(spec.modelName ? { modelName: spec.modelName } : {}),
        ...(spec.model ? { model: spec.model, progressBar: process.stderr.isTTY === true } : {}),
        ...(spec.role !== undefined ? { role: spec.role } : {}),
        ...(spec.migrationLimit !== undefined ? { migrationLimit: spec.migrationLimit } : {}),
        events: spec.kvEvents !== false,
        engine: {
          ...(spec.threads !== undefined ? { threads: spec.threads } : {}),
          ...(spec.sequences !== undefined ? { sequences: spec.sequences } : {}),
          logger: runtime.logger,
        },
      });
    case "mocker":
      return serveMockerWorker(runtime, {
        namespace: spec.namespace,
        ...(spec.modelName ? { modelName: spec.modelName } : {}),
        ...(spec.role !== undefined ? { role: spec.role } : {}),
        ...(spec.migrationLimit !== undefined ? { migrationLimit: spec.migrationLimit } : {}),
        engine: {
          speedupRatio: spec.speedup ?? 1,
          ...(spec.kvTransferGbps !== undefined ? { kvTransferGbps: spec.kvTransferGbps } : {}),
          ...(spec.kvBytesPerToken !== undefined ? { kvBytesPerToken: spec.kvBytesPerToken } : {}),
        },
      });
  }
}
