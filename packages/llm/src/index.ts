/**
 * @tdist/llm: the LLM serving stack on the tdist runtime — OpenAI-compatible
 * frontend, model cards and discovery, preprocessor (tokenizer, chat
 * template), backend (incremental detokenizer, stop strings), KV events.
 */

export {
  BLOCK_HASH_SEED,
  chainBlockHash,
  computeBlockHashes,
  hashTokenBlock,
  parseBlockHash,
} from "./kv/block-hash.js";
export {
  KV_EVENTS_TOPIC,
  type KvCacheEvent,
  type KvCacheEventData,
  type KvStoredBlock,
  LOAD_METRICS_TOPIC,
  type WorkerLoadMetrics,
} from "./kv/kv-events.js";
export {
  type ModelCard,
  modelCardKey,
  modelCardPrefix,
  parseModelCard,
  type TokenizerSource,
} from "./model-card/model-card.js";
export type { EngineOutput, FinishReason, TokenLogprob } from "./protocol/engine-output.js";
export type {
  OutputOptions,
  PreprocessedRequest,
  SamplingOptions,
  StopConditions,
} from "./protocol/preprocessed-request.js";
