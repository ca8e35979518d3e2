import { availableParallelism } from "node:os";
import type { KvEventPublisher } from "@tdist/llm";
import { type KvTransferPlane, type Logger, silentLogger, TdistError } from "@tdist/runtime";

/**
 * Tokens per KV block in the engine's KV events and model card. llama.cpp
 * keeps one token history per sequence, not paged blocks; this is the size
 * KV-aware routing hashes prompts with.
 */
export const LLAMACPP_KV_BLOCK_SIZE = 16;

/** Where the engine publishes KV events and load metrics (see `LlamaCppEngineOptions.events`). */
export interface LlamaCppEventOptions {
  /** Identifies this worker in the events: the runtime instance id the router knows it by. */
  workerId: string;
  /** Receives `(subject, payload)`; the runtime's `EventPlane` satisfies it. */
  publisher: KvEventPublisher;
  /** Default `KV_EVENTS_TOPIC` (the caller maps it under its component). */
  kvEventsSubject?: string;
  /** Default `LOAD_METRICS_TOPIC`. */
  loadMetricsSubject?: string;
}

/** Where llama.cpp runs: CPU (default) or a GPU backend whose prebuilt binary is installed. */
export type LlamaCppGpu = false | "auto" | "cuda" | "vulkan" | "metal";

export interface LlamaCppEngineOptions {
  /** Path of a GGUF model file. */
  modelPath: string;
  /**
   * Threads llama.cpp computes with. Default `defaultThreads()`:
   * `max(1, min(4, cores - 1))`, one core left to Node and the IPC. The
   * library's own default (every core) oversubscribes small machines badly:
   * on 2 cores it was ~60 tok/s against ~400 with 1 thread on the tiny model.
   */
  threads?: number;
  /** Tokens per sequence (prompt plus output). Default: the model's trained context, at most 4096. */
  contextSize?: number;
  /** Sequences in the context: requests served concurrently (more wait). Default 8. */
  sequences?: number;
  /** Most tokens in one llama.cpp decode. Default 512. */
  batchSize?: number;
  /**
   * Flash attention. Default false: on CPU, llama.cpp's flash attention
   * makes greedy output depend on which requests share a batch (and was
   * slower on small models); without it, 8 concurrent requests give the same
   * tokens as 8 sequential ones.
   */
  flashAttention?: boolean;
  /**
   * Decode the running sequences together in one llama.cpp batch
   * (continuous batching; see `SequenceBatching`). Default true. False
   * decodes one sequence's tokens per batch, interleaving requests token by
   * token: slower, kept for comparing the two.
   */
  batchAcrossSequences?: boolean;
  /** GPU backend. Default false (CPU). With `build: "never"`, a GPU needs its prebuilt `@node-llama-cpp/*` package installed. */
  gpu?: LlamaCppGpu;
  /** Tokens a request may generate ahead of its consumer before it pauses. Default 256. */
  creditWindow?: number;
  /**
   * Publish KV events (`stored`, `removed`, `cleared`) for what the
   * sequences' KV caches hold, so `--router-mode kv` routes a returning
   * conversation to the worker holding its prefix, and load metrics
   * (sequences running and waiting, their KV blocks, prompt tokens left to
   * prefill) for the routers' load terms. Default: none
   * (`serveLlamaCppWorker` turns them on; `kv-approx` needs no events).
   */
  events?: LlamaCppEventOptions;
  /**
   * Moves prompts' KV caches to and from other engines for disaggregated
   * serving (`PreprocessedRequest.disaggregation`): a prefill-phase request
   * offers its prompt's state through it, a decode-phase request fetches
   * one. Default: none (`serveLlamaCppWorker` passes the runtime's
   * `kvTransfer`); without it a prefill-phase request is refused and a
   * decode-phase one prefills here.
   */
  kvTransfer?: KvTransferPlane;
  /**
   * Directory the engine makes its private temporary directory in (KV state
   * files being exported, offered or imported; removed on `close`). Default
   * the OS temp dir.
   */
  tempDir?: string;
  /** How long loading the model may take, ms. Default 300 000. */
  loadTimeoutMs?: number;
  /** Restarts allowed within `restartWindowMs` after crashes before the engine gives up. Default 5. */
  maxRestarts?: number;
  /** Default 60 000 ms. */
  restartWindowMs?: number;
  logger?: Logger;
}

export interface ResolvedLlamaCppEngineOptions {
  modelPath: string;
  threads: number;
  contextSize: number | undefined;
  sequences: number;
  batchSize: number;
  flashAttention: boolean;
  batchAcrossSequences: boolean;
  gpu: LlamaCppGpu;
  creditWindow: number;
  events: LlamaCppEventOptions | undefined;
  kvTransfer: KvTransferPlane | undefined;
  tempDir: string | undefined;
  loadTimeoutMs: number;
  maxRestarts: number;
  restartWindowMs: number;
  logger: Logger;
}

/** `max(1, min(4, cores - 1))`: fast on small machines, never every core. */
export function defaultThreads(cores: number = availableParallelism()): number {
  return Math.max(1, Math.min(4, cores - 1));
}

const GPU_VALUES: readonly LlamaCppGpu[] = [false, "auto", "cuda", "vulkan", "metal"];

function integer(name: string, value: number | undefined, fallback: number, min: number, max?: number): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < min || (max !== undefined && resolved > max)) {
    const range = max === undefined ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new TdistError("invalid_option", `${name} must be an integer ${range}, got ${String(value)}`);
  }
  return resolved;
}

function checkEvents(events: LlamaCppEventOptions | undefined): LlamaCppEventOptions | undefined {
  if (events === undefined) return undefined;
  if (typeof events.workerId !== "string" || events.workerId.length === 0) {
    throw new TdistError("invalid_option", "events.workerId must be a non-empty string");
  }
  if (typeof events.publisher?.publish !== "function") {
    throw new TdistError("invalid_option", "events.publisher must have a publish(subject, payload) method");
  }
  return events;
}

export function resolveLlamaCppEngineOptions(options: LlamaCppEngineOptions): ResolvedLlamaCppEngineOptions {
  if (typeof options?.modelPath !== "string" || options.modelPath.length === 0) {
    throw new TdistError("invalid_option", "modelPath must name a GGUF file");
  }
  const gpu = options.gpu ?? false;
  if (!GPU_VALUES.includes(gpu)) {
    throw new TdistError("invalid_option", `gpu must be one of ${GPU_VALUES.join(", ")}, got ${String(options.gpu)}`);
  }
  if (options.flashAttention !== undefined && typeof options.flashAttention !== "boolean") {
    throw new TdistError("invalid_option", `flashAttention must be a boolean, got ${String(options.flashAttention)}`);
  }
  const { kvTransfer, tempDir } = options;
  if (kvTransfer !== undefined && (typeof kvTransfer?.offer !== "function" || typeof kvTransfer.fetch !== "function")) {
    throw new TdistError("invalid_option", "kvTransfer must be a KV transfer plane (offer and fetch)");
  }
  if (tempDir !== undefined && (typeof tempDir !== "string" || tempDir.length === 0)) {
    throw new TdistError("invalid_option", "tempDir must name a directory");
  }
  return {
    modelPath: options.modelPath,
    threads: integer("threads", options.threads, defaultThreads(), 1, 1024),
    contextSize:
      options.contextSize === undefined ? undefined : integer("contextSize", options.contextSize, 0, 16, 1 << 24),
    sequences: integer("sequences", options.sequences, 8, 1, 256),
    batchSize: integer("batchSize", options.batchSize, 512, 1, 1 << 20),
    flashAttention: options.flashAttention ?? false,
    batchAcrossSequences: options.batchAcrossSequences ?? true,
    gpu,
    creditWindow: integer("creditWindow", options.creditWindow, 256, 1),
    events: checkEvents(options.events),
    kvTransfer,
    tempDir,
    loadTimeoutMs: integer("loadTimeoutMs", options.loadTimeoutMs, 300_000, 1),
    maxRestarts: integer("maxRestarts", options.maxRestarts, 5, 0),
    restartWindowMs: integer("restartWindowMs", options.restartWindowMs, 60_000, 1),
    logger: options.logger ?? silentLogger,
  };
}
