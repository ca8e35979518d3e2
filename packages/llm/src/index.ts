/**
 * @tdist/llm: the LLM serving stack on the tdist runtime — OpenAI-compatible
 * frontend, model cards and discovery, preprocessor (tokenizer, chat
 * template), backend (incremental detokenizer, stop strings), KV events.
 */

export {
  BUILTIN_TOKENIZER_NAMES,
  type BuiltinTokenizerFiles,
  type BuiltinTokenizerName,
  builtinTokenizerDirectory,
  builtinTokenizerFiles,
} from "./assets/builtin-tokenizers.js";
export { IncrementalDetokenizer, type IncrementalDetokenizerOptions } from "./backend/incremental-detokenizer.js";
export {
  assembleResponse,
  ResponseAssembler,
  type ResponseAssemblerOptions,
  type ResponseChunk,
} from "./backend/response-assembler.js";
export { type StopMatchResult, StopStringMatcher } from "./backend/stop-string-matcher.js";
export { DisaggregationMetrics, type PrefillQueueSource, type WorkerType } from "./disagg/disagg-metrics.js";
export {
  DEFAULT_DISAGGREGATION,
  type DisaggregationDecision,
  type DisaggregationInput,
  type DisaggregationOptions,
  type DisaggregationOutcome,
  decideDisaggregation,
  type ResolvedDisaggregationOptions,
  resolveDisaggregationOptions,
  uncachedPromptTokens,
} from "./disagg/disagg-policy.js";
export {
  type ChoiceStream,
  PREFILL_WORKER_HEADER,
  PrefillRouter,
  type PrefillRouterOptions,
  type WorkerPool,
} from "./disagg/prefill-router.js";
export { FrontendMetrics } from "./frontend/frontend-metrics.js";
export { HttpFrontend, type HttpFrontendOptions } from "./frontend/http-frontend.js";
export {
  type KvRouterKnobs,
  type ModelEntry,
  ModelManager,
  type ModelManagerOptions,
  type PipelineFactory,
} from "./frontend/model-manager.js";
export type { ChoiceDecoder, DecodedStep, ModelPipeline, PreprocessedInput } from "./frontend/model-pipeline.js";
export { HttpError, toHttpError } from "./frontend/openai-errors.js";
export { fetchTokenizerJson } from "./frontend/tokenizer-fetch.js";
export { TokenizerPipeline } from "./frontend/tokenizer-pipeline.js";
export {
  BLOCK_HASH_SEED,
  chainBlockHash,
  computeBlockHashes,
  hashTokenBlock,
  parseBlockHash,
} from "./kv/block-hash.js";
export { type KvEventPublisher, KvEventSink } from "./kv/kv-event-sink.js";
export {
  KV_EVENTS_TOPIC,
  type KvCacheEvent,
  type KvCacheEventData,
  type KvStoredBlock,
  LOAD_METRICS_TOPIC,
  type WorkerLoadMetrics,
} from "./kv/kv-events.js";
export {
  answerKvResyncRequests,
  type HeldBlock,
  KV_RESYNC_TOPIC,
  type KvResyncRequest,
  kvResyncSubject,
  resyncEvents,
} from "./kv/kv-resync.js";
export { SequenceKvTracker } from "./kv/sequence-kv-tracker.js";
export { type WorkerEventChannel, workerEventChannel } from "./kv/worker-event-channel.js";
export { ActiveSequences } from "./kv-router/active-sequences.js";
export { BinaryHeap } from "./kv-router/binary-heap.js";
export {
  createRouterPolicy,
  isLlmRouterMode,
  LLM_ROUTER_MODES,
  type LlmRouterMode,
  type RouterPolicyOptions,
} from "./kv-router/create-router-policy.js";
export { JetStreamKvEventLog, kvEventStreamName } from "./kv-router/jetstream-kv-event-log.js";
export { kvEventsSubject, MemoryKvEventHistory } from "./kv-router/kv-event-history.js";
export { KvIndexer, type KvIndexerOptions, type KvIndexerSnapshot } from "./kv-router/kv-indexer.js";
export { KvRouter, type KvRouterMode, type KvRouterOptions } from "./kv-router/kv-router.js";
export {
  type BusyThresholds,
  DEFAULT_OVERLAP_WEIGHT,
  KvScheduler,
  type KvSchedulerOptions,
  selectByCost,
  workerCosts,
} from "./kv-router/kv-scheduler.js";
export {
  BasicLlmRouter,
  CACHED_BLOCKS_HEADER,
  type LlmRouter,
  ROUTER_OVERLAP_WEIGHT_ANNOTATION,
  ROUTER_REQUEST_ID_ANNOTATION,
  ROUTER_TEMPERATURE_ANNOTATION,
  type RoutingDecision,
  WORKER_HEADER,
} from "./kv-router/llm-router.js";
export { LlmdWeightedScorerPolicy } from "./kv-router/llmd-weighted-scorer-policy.js";
export { SglangCacheAwarePolicy } from "./kv-router/sglang-cache-aware-policy.js";
export {
  type ModelCard,
  modelCardKey,
  modelCardPrefix,
  parseModelCard,
  type TokenizerSource,
} from "./model-card/model-card.js";
export {
  CHATML_FALLBACK_TEMPLATE,
  type ChatContentPartInput,
  type ChatMessageInput,
  ChatTemplate,
  type ChatTemplateInput,
} from "./preprocessor/chat-template.js";
export {
  type ChatInput,
  type CompletionInput,
  type GenerationParams,
  Preprocessor,
  type PreprocessorCard,
  type PreprocessorOptions,
  type PreprocessResult,
} from "./preprocessor/preprocessor.js";
export { RequestParamError } from "./preprocessor/request-param-error.js";
export type { TokenDecodeStrategy } from "./preprocessor/token-bytes.js";
export {
  clearTokenizerCache,
  type DecodeOptions,
  type EncodeOptions,
  loadTokenizer,
  loadTokenizerFromDirectory,
  Tokenizer,
  type TokenizerFiles,
} from "./preprocessor/tokenizer.js";
export {
  cardFieldsFromTokenizerConfig,
  chatTemplateFromConfig,
  type NamedChatTemplate,
  type SpecialTokenValue,
  specialTokenContent,
  type TokenizerCardFields,
  type TokenizerConfig,
  tokenizerConfigFromCard,
} from "./preprocessor/tokenizer-config.js";
export {
  componentForRole,
  type DecodePhase,
  type DisaggregationParams,
  type KvImportOutcome,
  PREFILL_COMPONENT,
  type PrefillPhase,
  WORKER_ROLES,
  type WorkerRole,
} from "./protocol/disaggregation.js";
export type { EngineErrorCode, EngineOutput, FinishReason, TokenLogprob } from "./protocol/engine-output.js";
export { LOGIT_BIAS_LIMIT, parseLogitBias } from "./protocol/logit-bias.js";
export type * from "./protocol/openai.js";
export type {
  OutputOptions,
  PreprocessedRequest,
  SamplingOptions,
  StopConditions,
} from "./protocol/preprocessed-request.js";
export { builtinModelAssets, type ModelAssets } from "./worker/builtin-model.js";
export {
  type ServedModel,
  type ServeModelOptions,
  serveModel,
  sha256Hex,
  TOKENIZER_ENDPOINT,
} from "./worker/serve-model.js";
