/**
 * @tdist/engine-mocker: a GPU-free simulation of a vLLM-like engine (paged KV
 * cache with prefix caching and LRU eviction, continuous batching, chunked
 * prefill, preemption, a step timing model with a speed-up factor) that
 * publishes real KV events and load metrics. As a prefill or decode worker
 * (`role`, with the runtime's `kvTransfer`) it hands a small real payload
 * over the KV transfer seam and charges the transfer time the bandwidth
 * gives.
 *
 * ```ts
 * import { MockerEngine } from "@tdist/engine-mocker";
 *
 * const engine = new MockerEngine({
 *   speedupRatio: 10,
 *   workerId: instanceId,
 *   eventPublisher: { publish: (topic, payload) => plane.publish(eventSubject("tdist", "backend", topic), payload) },
 * });
 * await endpoint.serve(engine.handler);
 * ```
 */
export {
  DEFAULT_KV_BYTES_PER_TOKEN,
  DEFAULT_KV_CACHE_SHAPE,
  DEFAULT_KV_TRANSFER_GBPS,
  type KvCacheShape,
  kvBytesPerToken,
  kvTransferMs,
} from "./kv-transfer-model.js";
export { type MockerClock, SystemClock, VirtualClock } from "./mocker-clock.js";
export { type MockerActivity, MockerEngine, type MockerEngineState, type MockerStats } from "./mocker-engine.js";
export {
  type MockerEngineOptions,
  type MockerEventPublisher,
  type MockerStepInfo,
  type ResolvedMockerOptions,
  resolveMockerOptions,
} from "./mocker-options.js";
export { type MockerWorkerOptions, type ServedMockerWorker, serveMockerWorker } from "./serve-mocker-worker.js";
export { DEFAULT_TIMING_MODEL, type MockerTimingModel, type StepWork, stepDurationMs } from "./timing-model.js";
