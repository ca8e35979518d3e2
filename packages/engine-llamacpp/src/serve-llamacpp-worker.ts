import { KV_EVENTS_TOPIC, type ServedModel, serveModel } from "@tdist/llm";
import { type DistributedRuntime, eventSubject } from "@tdist/runtime";
import { LlamaCppEngine } from "./llamacpp-engine.js";
import type { LlamaCppEngineOptions } from "./llamacpp-options.js";
import { resolveModelReference } from "./model-reference.js";
import { ensureTinyModel } from "./tiny-model.js";

export interface LlamaCppWorkerOptions {
  namespace: string;
  component?: string;
  /** Served model name. Default: the GGUF's `general.name` (the tiny model's is `tdist-tiny-random`). */
  modelName?: string;
  /**
   * The model: a GGUF path or a remote reference (`hf:<user>/<repo>/<file>.gguf`, a URL), downloaded
   * into the cache once (see `resolveModelReference`). Without it (and without `engine.modelPath`),
   * the built-in tiny model, generated into the cache on first use.
   */
  model?: string;
  /** Print a progress bar while downloading `model`. Default false. */
  progressBar?: boolean;
  /** Engine options (`kvEvents` is filled in unless `kvEvents` is false). */
  engine?: Partial<Omit<LlamaCppEngineOptions, "kvEvents">>;
  /**
   * Publish the engine's KV events on the runtime's event plane under
   * `{namespace}.{component}.kv-events`, with the runtime instance id as the
   * worker id, for `--router-mode kv`. Default true.
   */
  kvEvents?: boolean;
  /** Cache root for downloads and the tiny model. Default `TDIST_CACHE_DIR` or `~/.cache/tdist`. */
  cacheDir?: string;
  migrationLimit?: number;
}

export interface ServedLlamaCppWorker extends ServedModel {
  readonly engine: LlamaCppEngine;
}

/**
 * Serves a GGUF model through llama.cpp as a model worker: the card
 * (tokenizer, chat template, context length, eos ids) comes from the GGUF
 * file, so nothing else is needed. The engine's KV events go to the
 * runtime's event plane, so KV-aware routing (`--router-mode kv`) sees what
 * each worker's sequences hold. `stop()` also closes the engine.
 *
 * ```ts
 * const worker = await serveLlamaCppWorker(runtime, { namespace: "tdist", engine: { modelPath: "model.gguf" } });
 * ```
 */
export async function serveLlamaCppWorker(
  runtime: DistributedRuntime,
  options: LlamaCppWorkerOptions,
): Promise<ServedLlamaCppWorker> {
  const cache = options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {};
  const modelPath =
    options.model !== undefined
      ? await resolveModelReference(options.model, { ...cache, progressBar: options.progressBar ?? false })
      : (options.engine?.modelPath ?? (await ensureTinyModel(cache)));
  const component = options.component ?? "backend";
  let kvEvents: LlamaCppEngineOptions["kvEvents"];
  if (options.kvEvents !== false) {
    const lease = await runtime.primaryLease();
    const events = await runtime.eventPlane();
    kvEvents = {
      workerId: lease.id,
      publisher: {
        publish: (topic, payload) => events.publish(eventSubject(options.namespace, component, topic), payload),
      },
      subject: KV_EVENTS_TOPIC,
    };
  }
  const engine = await LlamaCppEngine.start({
    logger: runtime.logger,
    ...options.engine,
    modelPath,
    ...(kvEvents !== undefined ? { kvEvents } : {}),
  });
  try {
    const served = await serveModel(runtime, {
      namespace: options.namespace,
      component,
      tokenizerJson: engine.modelAssets().tokenizerJson,
      engine: engine.handler,
      card: engine.modelCard({
        ...(options.modelName !== undefined ? { name: options.modelName } : {}),
        ...(options.migrationLimit !== undefined ? { migrationLimit: options.migrationLimit } : {}),
      }),
    });
    return {
      ...served,
      engine,
      async stop(stopOptions) {
        try {
          await served.stop(stopOptions);
        } finally {
          await engine.close();
        }
      },
    };
  } catch (err) {
    await engine.close();
    throw err;
  }
}
