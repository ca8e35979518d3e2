import { builtinModelAssets, type ModelAssets, type ServedModel, serveModel, workerEventChannel } from "@tdist/llm";
import type { DistributedRuntime } from "@tdist/runtime";
import { MockerEngine } from "./mocker-engine.js";
import type { MockerEngineOptions } from "./mocker-options.js";

export interface MockerWorkerOptions {
  namespace: string;
  component?: string;
  /** Served model name. Default "mocker". */
  modelName?: string;
  /** Engine options; `workerId`, `vocabSize` and the event publisher are filled in. */
  engine?: Omit<MockerEngineOptions, "workerId" | "eventPublisher" | "vocabSize">;
  assets?: ModelAssets;
}

export interface ServedMockerWorker extends ServedModel {
  readonly engine: MockerEngine;
}

/**
 * Serves the mocker as a model worker. Its worker id is the runtime's
 * instance id, and its KV events and load metrics go to the runtime's event
 * plane under `{namespace}.{component}.{topic}`; a router that asks (after
 * a gap in the event ids) gets the whole cache re-sent.
 */
export async function serveMockerWorker(
  runtime: DistributedRuntime,
  options: MockerWorkerOptions,
): Promise<ServedMockerWorker> {
  const assets = options.assets ?? builtinModelAssets();
  const component = options.component ?? "backend";
  const channel = await workerEventChannel(runtime, options.namespace, component);
  const engine = new MockerEngine({
    ...options.engine,
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
      ...assets.cardFields,
      kvBlockSize: resolved.blockSize,
      limits: { totalKvBlocks: resolved.totalKvBlocks, maxSequences: resolved.maxNumSeqs },
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
