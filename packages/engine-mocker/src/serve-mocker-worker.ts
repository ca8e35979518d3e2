import {
  builtinModelAssets,
  componentForRole,
  type ModelAssets,
  type ServedModel,
  serveModel,
  type WorkerRole,
  workerEventChannel,
} from "@tdist/llm";
import type { DistributedRuntime } from "@tdist/runtime";
import { MockerEngine } from "./mocker-engine.js";
import type { MockerEngineOptions } from "./mocker-options.js";

export interface MockerWorkerOptions {
  namespace: string;
  /** Default: the role's (`prefill` for prefill workers, else `backend`). */
  component?: string;
  /** Served model name. Default "mocker". */
  modelName?: string;
  /** The worker's role in disaggregated serving, in its model card. Default: `engine.role`, else `aggregated`. */
  role?: WorkerRole;
  /** Migrations a frontend gives a request to this model when its worker fails (the card's `migrationLimit`). */
  migrationLimit?: number;
  /**
   * Engine options; `workerId`, `vocabSize`, the event publisher and the KV
   * transfer plane (the runtime's) are filled in.
   */
  engine?: Omit<MockerEngineOptions, "workerId" | "eventPublisher" | "vocabSize" | "kvTransfer">;
  assets?: ModelAssets;
}

export interface ServedMockerWorker extends ServedModel {
  readonly engine: MockerEngine;
}

/**
 * Serves the mocker as a model worker (aggregated, prefill or decode, see
 * `MockerEngine.generate`). Its worker id is the runtime's
 * instance id, and its KV events and load metrics go to the runtime's event
 * plane under `{namespace}.{component}.{topic}`; a router that asks (after
 * a gap in the event ids) gets the whole cache re-sent.
 */
export async function serveMockerWorker(
  runtime: DistributedRuntime,
  options: MockerWorkerOptions,
): Promise<ServedMockerWorker> {
  const assets = options.assets ?? builtinModelAssets();
  const role = options.role ?? options.engine?.role ?? "aggregated";
  // Prefill workers publish KV events under their own component, so the prefill router KV-routes them apart.
  const component = options.component ?? componentForRole(role);
  const channel = await workerEventChannel(runtime, options.namespace, component);
  const engine = new MockerEngine({
    ...options.engine,
    role,
    kvTransfer: runtime.kvTransfer,
    workerId: channel.workerId,
    vocabSize: assets.vocabSize,
    logger: runtime.logger,
    eventPublisher: channel.publisher,
  });
  const resolved = engine.options;
  const served = await serveModel(runtime, {
    namespace: options.namespace,
    component,
    tokenizerJson: assets.tokenizerJson,
    engine: engine.handler,
    card: {
      name: options.modelName ?? "mocker",
      engine: "mocker",
      role,
      ...assets.cardFields,
      kvBlockSize: resolved.blockSize,
      limits: { totalKvBlocks: resolved.totalKvBlocks, maxSequences: resolved.maxNumSeqs },
      ...(options.migrationLimit === undefined ? {} : { migrationLimit: options.migrationLimit }),
    },
  });
  const resync = await channel.answerResync(() => engine.resyncKvEvents());
  return {
    ...served,
    engine,
    async stop(stopOptions) {
      await resync.stop();
      await served.stop(stopOptions);
      await engine.close();
    },
  };
}
