/**
 * @tdist/engine-mocker: a GPU-free simulation of a vLLM-like engine (paged KV
 * cache with prefix caching and LRU eviction, continuous batching, chunked
 * prefill, preemption, a step timing model with a speed-up factor) that
 * publishes real KV events and load metrics.
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
export { type MockerClock, SystemClock, VirtualClock } from "./mocker-clock.js";
export { MockerEngine, type MockerEngineState, type MockerStats } from "./mocker-engine.js";
export {
  type MockerEngineOptions,
  type MockerEventPublisher,
  type MockerStepInfo,
  type ResolvedMockerOptions,
  resolveMockerOptions,
} from "./mocker-options.js";
export { type MockerWorkerOptions, type ServedMockerWorker, serveMockerWorker } from "./serve-mocker-worker.js";
export { DEFAULT_TIMING_MODEL, type MockerTimingModel, type StepWork, stepDurationMs } from "./timing-model.js";
