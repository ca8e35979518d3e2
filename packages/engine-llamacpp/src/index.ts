/**
 * @tdist/engine-llamacpp: real inference of GGUF models through llama.cpp
 * (node-llama-cpp), CPU by default, in a child process so a native abort
 * never takes the worker down; plus a GGUF writer and the built-in tiny model
 * (random weights, real Qwen3 vocabulary) that tests and `tdist run` use.
 *
 * ```ts
 * import { ensureTinyModel, LlamaCppEngine } from "@tdist/engine-llamacpp";
 * import { serveModel } from "@tdist/llm";
 *
 * const engine = await LlamaCppEngine.start({ modelPath: await ensureTinyModel() });
 * await serveModel(runtime, {
 *   namespace: "tdist",
 *   card: engine.modelCard(),
 *   tokenizerJson: engine.modelAssets().tokenizerJson,
 *   engine: engine.handler,
 * });
 * ```
 *
 * Or in one call: `await serveLlamaCppWorker(runtime, { namespace: "tdist", engine: { modelPath } })`.
 */
export { DecodePause } from "./decode-pause.js";
export {
  describeGgufModel,
  type GgufModelDescription,
  rebuildTokenizerJson,
} from "./gguf-model-assets.js";
export { type GgufFileInfo, type GgufTensorInfo, readGgufFile } from "./gguf-reader.js";
export type { GgufMetadataValue, GgufScalarTypeName } from "./gguf-types.js";
export { GgufWriter } from "./gguf-writer.js";
export {
  LlamaCppEngine,
  type LlamaCppEngineState,
  type LlamaCppEngineStats,
  type LlamaCppGenerateOptions,
  type LlamaCppModelInfo,
  type SequenceState,
} from "./llamacpp-engine.js";
export {
  defaultThreads,
  LLAMACPP_KV_BLOCK_SIZE,
  type LlamaCppEngineOptions,
  type LlamaCppEventOptions,
  type LlamaCppGpu,
  type ResolvedLlamaCppEngineOptions,
  resolveLlamaCppEngineOptions,
} from "./llamacpp-options.js";
export {
  type LogModelProgressOptions,
  logModelProgress,
  type ModelProgress,
  type ModelProgressListener,
} from "./model-progress.js";
export { isRemoteModelReference, type ResolveModelOptions, resolveModelReference } from "./model-reference.js";
export { oneSequencePerDecode, SequenceBatching } from "./sequence-batching.js";
export { commonPrefixLength, SequencePool, type SequenceSlot } from "./sequence-pool.js";
export {
  type LlamaCppWorkerOptions,
  type ServedLlamaCppWorker,
  serveLlamaCppWorker,
} from "./serve-llamacpp-worker.js";
export {
  defaultCacheDir,
  type EnsureTinyModelOptions,
  ensureTinyModel,
  makeTinyModel,
  TINY_MODEL_NAME,
  type TinyModel,
  type TinyModelOptions,
  type TinyModelTokenizerFiles,
  tinyModelFileName,
} from "./tiny-model.js";
