import { randomBytes } from "node:crypto";
import { KV_EVENTS_TOPIC, type KvEventPublisher, LOAD_METRICS_TOPIC, WORKER_ROLES, type WorkerRole } from "@tdist/llm";
import { type KvTransferPlane, type Logger, silentLogger, TdistError } from "@tdist/runtime";
import { DEFAULT_KV_BYTES_PER_TOKEN, DEFAULT_KV_TRANSFER_GBPS } from "./kv-transfer-model.js";
import { type MockerClock, SystemClock } from "./mocker-clock.js";
import { DEFAULT_TIMING_MODEL, type MockerTimingModel } from "./timing-model.js";

/**
 * Where the mocker sends KV events and load metrics. The runtime's
 * `EventPlane` satisfies it as it is; anything with this one method does.
 */
export type MockerEventPublisher = KvEventPublisher;

/** What one step did, for tests, benchmarks and debugging. */
export interface MockerStepInfo {
  /** 0 for the first step of the engine. */
  index: number;
  /** Clock time the step started at and its simulated duration (after the speed-up), ms. */
  startedAtMs: number;
  durationMs: number;
  /** Tokens computed this step: prefill chunks plus one per decoding sequence. */
  scheduledTokens: number;
  prefillTokens: number;
  decodeSequences: number;
  runningSequences: number;
  waitingSequences: number;
}

export interface MockerEngineOptions {
  /** Tokens per KV block. Default 16. */
  blockSize?: number;
  /** KV blocks in the simulated GPU. Default 8192. */
  totalKvBlocks?: number;
  /** Most sequences running at once. Default 256. */
  maxNumSeqs?: number;
  /** Most tokens computed in one step (must be >= maxNumSeqs). Default 8192. */
  maxNumBatchedTokens?: number;
  /** Reuse cached blocks of identical prefixes. Default true. */
  enablePrefixCaching?: boolean;
  /** Split long prefills across steps within the token budget. Default true. */
  enableChunkedPrefill?: boolean;
  /** 1 = the timing model in real time; 10 = ten times faster. Default 1. */
  speedupRatio?: number;
  /** Output ids are drawn from `[0, vocabSize)`: pass the tokenizer's vocabulary size. Default 32000. */
  vocabSize?: number;
  /** Identifies this worker in KV events and load metrics. Default: random 16 hex digits. */
  workerId?: string;
  /** Receives KV events and load metrics; none are published without it. */
  eventPublisher?: MockerEventPublisher;
  /** Subject of KV events. Default `KV_EVENTS_TOPIC` (the caller maps it under its component). */
  kvEventsSubject?: string;
  /** Subject of load metrics. Default `LOAD_METRICS_TOPIC`. */
  loadMetricsSubject?: string;
  /** Simulated time source. Default: wall clock. */
  clock?: MockerClock;
  /** Overrides of the timing model's constants. */
  timing?: Partial<MockerTimingModel>;
  /** Called after each step. */
  onStep?: (step: MockerStepInfo) => void;
  logger?: Logger;
  /**
   * What the worker does in disaggregated serving (the model card's `role`).
   * Any role serves requests without `disaggregation` aggregated, and
   * follows a request's `disaggregation` phase when it has one. Default
   * `aggregated`.
   */
  role?: WorkerRole;
  /**
   * Where prefill-phase requests offer their KV cache and decode-phase ones
   * fetch it (the runtime's `kvTransfer`). Without it a request with a
   * `disaggregation` phase is refused.
   */
  kvTransfer?: KvTransferPlane;
  /**
   * Bandwidth between prefill and decode workers in gigabytes (10^9 bytes)
   * per second: a prefill answers `prompt tokens x kvBytesPerToken /
   * bandwidth` later than its prefill ends. 0 leaves transfer time out.
   * Default 64 (Dynamo's mocker default).
   */
  kvTransferGbps?: number;
  /**
   * KV cache bytes per token, for the transfer time (not the bytes actually
   * sent: the mocker sends a small payload that identifies the prompt).
   * Default 131072: 32 layers x 2 (K, V) x 8 KV heads x 128 x 2 bytes, a
   * Llama-3.1-8B-like shape to match the timing model (see `kvBytesPerToken`).
   */
  kvBytesPerToken?: number;
}

export interface ResolvedMockerOptions {
  blockSize: number;
  totalKvBlocks: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  enablePrefixCaching: boolean;
  enableChunkedPrefill: boolean;
  speedupRatio: number;
  vocabSize: number;
  workerId: string;
  eventPublisher: MockerEventPublisher | undefined;
  kvEventsSubject: string;
  loadMetricsSubject: string;
  clock: MockerClock;
  timing: MockerTimingModel;
  onStep: ((step: MockerStepInfo) => void) | undefined;
  logger: Logger;
  role: WorkerRole;
  kvTransfer: KvTransferPlane | undefined;
  kvTransferGbps: number;
  kvBytesPerToken: number;
}

function positiveInteger(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new TdistError("invalid_option", `${option} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

function nonNegativeNumber(option: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new TdistError("invalid_option", `${option} must be a finite number >= 0, got ${String(value)}`);
  }
  return value;
}

/** Applies defaults and validates; throws `invalid_option` naming the option. */
export function resolveMockerOptions(options: MockerEngineOptions = {}): ResolvedMockerOptions {
  const maxNumSeqs = positiveInteger("maxNumSeqs", options.maxNumSeqs, 256);
  const maxNumBatchedTokens = positiveInteger("maxNumBatchedTokens", options.maxNumBatchedTokens, 8192);
  if (maxNumBatchedTokens < maxNumSeqs) {
    // Every running sequence must be able to decode in every step, or the last ones starve.
    throw new TdistError(
      "invalid_option",
      `maxNumBatchedTokens (${maxNumBatchedTokens}) must be >= maxNumSeqs (${maxNumSeqs})`,
    );
  }
  const speedupRatio = options.speedupRatio ?? 1;
  if (!Number.isFinite(speedupRatio) || speedupRatio <= 0) {
    throw new TdistError("invalid_option", `speedupRatio must be a finite number > 0, got ${String(speedupRatio)}`);
  }
  const timing = { ...DEFAULT_TIMING_MODEL, ...options.timing };
  for (const [key, value] of Object.entries(timing)) nonNegativeNumber(`timing.${key}`, value);
  const workerId = options.workerId ?? randomBytes(8).toString("hex");
  if (typeof workerId !== "string" || workerId.length === 0) {
    throw new TdistError("invalid_option", "workerId must be a non-empty string");
  }
  const role = options.role ?? "aggregated";
  if (!(WORKER_ROLES as readonly string[]).includes(role)) {
    throw new TdistError("invalid_option", `role must be one of ${WORKER_ROLES.join(", ")}, got ${String(role)}`);
  }
  return {
    blockSize: positiveInteger("blockSize", options.blockSize, 16),
    totalKvBlocks: positiveInteger("totalKvBlocks", options.totalKvBlocks, 8192),
    maxNumSeqs,
    maxNumBatchedTokens,
    enablePrefixCaching: options.enablePrefixCaching ?? true,
    enableChunkedPrefill: options.enableChunkedPrefill ?? true,
    speedupRatio,
    vocabSize: positiveInteger("vocabSize", options.vocabSize, 32000),
    workerId,
    eventPublisher: options.eventPublisher,
    kvEventsSubject: options.kvEventsSubject ?? KV_EVENTS_TOPIC,
    loadMetricsSubject: options.loadMetricsSubject ?? LOAD_METRICS_TOPIC,
    clock: options.clock ?? new SystemClock(),
    timing,
    onStep: options.onStep,
    logger: options.logger ?? silentLogger,
    role,
    kvTransfer: options.kvTransfer,
    kvTransferGbps: nonNegativeNumber("kvTransferGbps", options.kvTransferGbps ?? DEFAULT_KV_TRANSFER_GBPS),
    kvBytesPerToken: positiveInteger("kvBytesPerToken", options.kvBytesPerToken, DEFAULT_KV_BYTES_PER_TOKEN),
  };
}
