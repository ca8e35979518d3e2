import { serveEchoWorker } from "@tdist/engine-echo";
import { serveMockerWorker } from "@tdist/engine-mocker";
import type { ServedModel } from "@tdist/llm";
import { type DistributedRuntime, TdistError } from "@tdist/runtime";

export const ENGINES = ["echo", "mocker"] as const;
export type EngineKind = (typeof ENGINES)[number];

export interface WorkerSpec {
  engine: EngineKind;
  namespace: string;
  modelName?: string | undefined;
  /** echo: delay per token in ms. */
  delayMs?: number | undefined;
  /** mocker: timing speed-up factor. */
  speedup?: number | undefined;
}

export function parseEngine(value: string | undefined): EngineKind {
  const engine = value ?? "mocker";
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
      });
    case "mocker":
      return serveMockerWorker(runtime, {
        namespace: spec.namespace,
        ...(spec.modelName ? { modelName: spec.modelName } : {}),
        engine: { speedupRatio: spec.speedup ?? 1 },
      });
  }
}
