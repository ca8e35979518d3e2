import { componentForRole, type ServedModel, serveModel, type WorkerRole, workerEventChannel } from "@tdist/llm";
import type { DistributedRuntime } from "@tdist/runtime";
import { LlamaCppEngine } from "./llamacpp-engine.js";
import type { LlamaCppEngineOptions } from "./llamacpp-options.js";
import { logModelProgress, type ModelProgressListener } from "./model-progress.js";
import { resolveModelReference } from "./model-reference.js";
import { ensureTinyModel } from "./tiny-model.js";

export interface LlamaCppWorkerOptions {
  namespace: string;
  /** Default: `prefill` for the prefill role, else `backend`. */
  component?: string;
  /**
   * What the worker does in disaggregated serving (the card's `role`):
   * `aggregated` (default), `prefill` (computes prompts' KV and offers it
   * through the runtime's `kvTransfer`; registers under `prefill`) or
   * `decode` (continues from a transferred KV, or serves aggregated). Every
   * role serves both phases; the role tells the frontend where to send them.
   */
  role?: WorkerRole;
  /** Migrations a frontend gives a request to this model when its worker fails (the card's `migrationLimit`). */
  migrationLimit?: number;
  /** Served model name. Default: the GGUF's `general.name` (the tiny model's is `tdist-tiny-random`). */
  modelName?: string;
  /**
   * The model: a GGUF path or a remote reference (`hf:<user>/<repo>/<file>.gguf`, a URL), downloaded
   * into the cache once (see `resolveModelReference`). Without it (and without `engine.modelPath`),
   * the built-in tiny model, generated into the cache on first use.
   */
  model?: string;
  /** Print node-llama-cpp's progress bar while downloading `model` (instead of progress log lines). Default false. */
  progressBar?: boolean;
  /**
   * Hears the progress of the built-in model's first-run generation and of
   * `model`'s download. Default: progress lines at info on the runtime's
   * logger (bytes, percent, rate; one every 2 s and the last).
   */
  onProgress?: ModelProgressListener;
  /** Engine options (`events` is filled in unless `events` is false; `kvTransfer` defaults to the runtime's). */
  engine?: Partial<Omit<LlamaCppEngineOptions, "events">>;
  /**
   * Publish the engine's KV events and load metrics on the runtime's event
   * plane under `{namespace}.{component}.kv-events` / `.load-metrics`, with
   * the runtime instance id as the worker id, for the KV-aware routers.
   * Default true.
   */
  events?: boolean;
  /** Cache root for downloads and the tiny model. Default `TDIST_CACHE_DIR` or `~/.cache/tdist`. */
  cacheDir?: string;
}

export interface ServedLlamaCppWorker extends ServedModel {
  readonly engine: LlamaCppEngine;
}

/**
 * Serves a GGUF model through llama.cpp as a model worker: the card
 * (tokenizer, chat template, context length, eos ids) comes from the GGUF
 * file, so nothing else is needed. The engine's KV events go to the
 * runtime's event plane, so KV-aware routing (`--router-mode kv`) sees what
 * each worker's sequences hold (re-sent whole when a router asks, after a
 * gap in the event ids). `stop()` also closes the engine. With `role`, it
 * takes part in disaggregated serving: prompts' KV caches move between
 * workers through the runtime's `kvTransfer` plane.
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
  const progressBar = options.progressBar ?? false;
  const onProgress = options.onProgress ?? logModelProgress(runtime.logger);
  const modelPath =
    options.model !== undefined
      ? await resolveModelReference(options.model, {
          ...cache,
          progressBar,
          // A progress bar and log lines would say the same thing twice.
          ...(options.onProgress !== undefined || !progressBar ? { onProgress } : {}),
        })
      : (options.engine?.modelPath ?? (await ensureTinyModel({ ...cache, onProgress })));
  const role = options.role ?? "aggregated";
  const component = options.component ?? componentForRole(role);
  const channel =
    options.events === false ? undefined : await workerEventChannel(runtime, options.namespace, component);
  const engine = await LlamaCppEngine.start({
    logger: runtime.logger,
    kvTransfer: runtime.kvTransfer,
    ...options.engine,
    modelPath,
    ...(channel !== undefined ? { events: { workerId: channel.workerId, publisher: channel.publisher } } : {}),
  });
  try {
    const served = await serveModel(runtime, {
      namespace: options.namespace,
      component,
      tokenizerJson: engine.modelAssets().tokenizerJson,
      engine: engine.handler,
      card: {
        ...engine.modelCard({
          ...(options.modelName !== undefined ? { name: options.modelName } : {}),
          ...(options.role !== undefined ? { role } : {}),
        }),
        ...(options.migrationLimit === undefined ? {} : { migrationLimit: options.migrationLimit }),
      },
    });
    const resync = await channel?.answerResync(() => engine.resyncKvEvents());
    // A crash-looping engine serves nothing: take the card and the endpoint away so frontends route elsewhere.
    void engine.failed.then(async (err) => {
      runtime.logger.error(
        { err, instanceId: served.instanceId, model: served.card.name },
        "the llama.cpp engine failed; this worker leaves routing",
      );
      await served.stop({ graceMs: 0 }).catch((stopErr: unknown) => {
        runtime.logger.error({ err: stopErr }, "deregistering the failed worker failed");
      });
    });
    return {
      ...served,
      engine,
      async stop(stopOptions) {
        try {
          await resync?.stop();
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
