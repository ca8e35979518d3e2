import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type DecodePhase,
  type EngineOutput,
  KV_EVENTS_TOPIC,
  type KvEventPublisher,
  KvEventSink,
  type KvImportOutcome,
  LOAD_METRICS_TOPIC,
  LOGIT_BIAS_LIMIT,
  type ModelAssets,
  type ModelCard,
  type PreprocessedRequest,
  parseLogitBias,
  SequenceKvTracker,
  type TokenLogprob,
  type WorkerLoadMetrics,
  type WorkerRole,
} from "@tdist/llm";
import {
  type Context,
  isKvTransferFallback,
  type KvTransferOffer,
  type KvTransferPlane,
  type Logger,
  TdistError,
} from "@tdist/runtime";
import { describeGgufModel, type GgufModelDescription, specialTokenIdsOf } from "./gguf-model-assets.js";
import { readGgufFile } from "./gguf-reader.js";
import { stateTokens, withStreamCount } from "./kv-state-file.js";
import { stateFileSource, writeTransferredState } from "./kv-state-transfer.js";
import type {
  ChildMessage,
  ParentMessage,
  WorkerCall,
  WorkerCallResults,
  WorkerConfig,
  WorkerGenerateRequest,
  WorkerReady,
} from "./llamacpp-ipc.js";
import {
  LLAMACPP_KV_BLOCK_SIZE,
  type LlamaCppEngineOptions,
  type ResolvedLlamaCppEngineOptions,
  resolveLlamaCppEngineOptions,
} from "./llamacpp-options.js";
import { llamaCppWorkerEntry } from "./worker-entry.js";

/** Where the engine's KV events and load metrics go (`LlamaCppEngineOptions.events`). */
interface EngineEvents {
  tracker: SequenceKvTracker;
  sink: KvEventSink;
  publisher: KvEventPublisher;
  workerId: string;
  loadMetricsSubject: string;
}

export type LlamaCppEngineState = "starting" | "running" | "restarting" | "failed" | "closed";

/**
 * A sequence's KV cache, moved between engines (disaggregated prefill and
 * decode). Made by `exportSequenceState` from a prompt: it holds the prompt
 * minus its last token (llama.cpp does not save logits, so the decode side
 * evaluates the last token itself).
 */
export interface SequenceState {
  /** The tokens whose KV the state holds. */
  tokenIds: number[];
  /** llama.cpp's sequence state file, in one-stream form (see `kv-state-file.ts`). */
  data: Uint8Array;
  /** Identifies the model that made it (sha256 of its GGUF header); another model's state is refused. */
  modelFingerprint: string;
}

/** The model as the running engine serves it. */
export interface LlamaCppModelInfo extends GgufModelDescription {
  modelPath: string;
  fileBytes: number;
  /** sha256 of the GGUF header and metadata (see `SequenceState.modelFingerprint`). */
  fingerprint: string;
  /** Tokens per sequence. */
  contextSize: number;
  sequences: number;
  threads: number;
  /** End-of-generation ids llama.cpp stops on, without vocabulary tokens it merely looks at. */
  eosTokenIds: number[];
}

export interface LlamaCppGenerateOptions {
  /** Start from this KV state (from `exportSequenceState` of this prompt, possibly in another engine). */
  kvState?: SequenceState;
}

export interface LlamaCppEngineStats {
  state: LlamaCppEngineState;
  childPid: number | undefined;
  restarts: number;
  activeRequests: number;
}

/** What a request's stream carries: outputs, and in the prefill phase the one that says the state is saved. */
type StreamItem = EngineOutput & { exported?: true };

/** One request's stream from the child. */
class RequestStream {
  readonly #items: StreamItem[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  #badRequest: string | undefined;
  finished = false;

  push(output: StreamItem): void {
    if (this.#ended) return;
    this.#items.push(output);
    if (output.finishReason !== undefined || output.exported === true) this.#ended = true;
    this.#wake();
  }

  /** Ends the stream with nothing more (kill). */
  end(): void {
    this.#ended = true;
    this.#wake();
  }

  refuse(message: string): void {
    this.#badRequest = message;
    this.end();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<StreamItem> {
    while (true) {
      const item = this.#items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.#badRequest !== undefined) throw new TdistError("bad_request", this.#badRequest);
      if (this.#ended) return;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
  }
}

interface PendingCall {
  resolve: (result: unknown) => void;
  reject: (err: TdistError) => void;
}

/** One child process and what is in flight on it. */
class WorkerChild {
  readonly requests = new Map<number, RequestStream>();
  readonly calls = new Map<number, PendingCall>();
  ready: WorkerReady | undefined;
  exited = false;
  closing = false;
  #outbox: ParentMessage[] = [];
  #stderrTail = "";

  constructor(
    readonly process: ChildProcess,
    logger: Logger,
  ) {
    const keepTail = (chunk: Buffer): void => {
      const text = chunk.toString("utf8");
      this.#stderrTail = (this.#stderrTail + text).slice(-4096);
      for (const line of text.split("\n")) if (line.trim() !== "") logger.debug({ enginePid: process.pid }, line);
    };
    process.stderr?.on("data", keepTail);
    process.stdout?.on("data", keepTail);
  }

  /** Forgets what the child printed so far: once loaded, a crash's cause is in what comes after. */
  markLoaded(): void {
    this.#stderrTail = "";
  }

  /** The last relevant lines the child printed (llama.cpp's assertion text on an abort), without load chatter. */
  stderrTail(): string {
    const lines = this.#stderrTail.split("\n").filter((line) => line.trim() !== "" && !isHarmlessOutput(line));
    return lines.slice(-6).join(" | ");
  }

  send(message: ParentMessage): void {
    if (this.exited) return;
    if (this.#outbox.push(message) > 1) return;
    queueMicrotask(() => {
      const batch = this.#outbox;
      this.#outbox = [];
      if (this.exited || !this.process.connected) return;
      // Errors surface as the child's exit; the callback keeps them off the 'error' event.
      this.process.send(batch, () => {});
    });
  }
}

/** Warnings llama.cpp prints while loading a sound model: never the reason a child died. */
const HARMLESS_OUTPUT = [
  /was not control-type; this is probably a bug in the model/,
  /special_eos_id is not in special_eog_ids/,
  /n_ctx_per_seq|n_ctx_seq/,
  /^\s*\[node-llama-cpp\] load:/,
];

function isHarmlessOutput(line: string): boolean {
  return HARMLESS_OUTPUT.some((pattern) => pattern.test(line));
}

/** "with signal SIGKILL" or "with code 1", for messages about a child's exit. */
function exitDescription(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `with signal ${signal}` : `with code ${String(code)}`;
}

function isInteger(value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): value is number {
  return Number.isInteger(value) && (value as number) >= min && (value as number) <= max;
}

function finiteOr(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw new TdistError("bad_request", `sampling.${name} must be a number in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

const MAX_TOP_LOGPROBS = 20;

/**
 * Real inference of GGUF models through llama.cpp (node-llama-cpp), in a
 * child process so that a native abort never takes down the worker: the
 * requests in flight end with `finishReason: "error"`, the failure is logged,
 * and a new child loads the model again (up to `maxRestarts` per
 * `restartWindowMs`).
 *
 * Continuous batching: up to `sequences` requests share one llama.cpp
 * context, each on its own sequence, and are decoded together; more wait.
 * A request reuses the longest cached prefix among idle sequences.
 *
 * ```ts
 * const engine = await LlamaCppEngine.start({ modelPath: await ensureTinyModel() });
 * await serveModel(runtime, {
 *   namespace: "tdist",
 *   card: engine.modelCard(),
 *   tokenizerJson: engine.modelAssets().tokenizerJson,
 *   engine: engine.handler,
 * });
 * // ...
 * await engine.close();
 * ```
 */
export class LlamaCppEngine {
  readonly options: ResolvedLlamaCppEngineOptions;
  /** The `generate` endpoint handler, bound to this engine. */
  readonly handler: (request: PreprocessedRequest, ctx: Context) => AsyncGenerator<EngineOutput>;
  readonly #description: GgufModelDescription;
  readonly #fingerprint: string;
  readonly #fileBytes: number;
  readonly #stateDir: string;
  readonly #logger: Logger;
  #state: LlamaCppEngineState = "starting";
  #child: WorkerChild | undefined;
  /** The child requests go to: the running one, or the one being started. */
  #ready: Promise<WorkerChild>;
  #lastReady: WorkerReady | undefined;
  #modelEosTokenIds: number[] | undefined;
  #nextId = 0;
  #crashes: number[] = [];
  #restarts = 0;
  #failure: TdistError | undefined;
  #onFailed: (err: TdistError) => void = () => {};
  readonly #failed = new Promise<TdistError>((resolve) => {
    this.#onFailed = resolve;
  });
  /** With `events`: what the child's sequences hold and where KV events and load metrics go. */
  readonly #events: EngineEvents | undefined;
  /** Prompt states offered to decode engines and not yet fetched: released (their files deleted) on close. */
  readonly #offers = new Set<KvTransferOffer>();

  private constructor(
    options: ResolvedLlamaCppEngineOptions,
    description: GgufModelDescription,
    fingerprint: string,
    fileBytes: number,
    stateDir: string,
  ) {
    this.options = options;
    this.#description = description;
    this.#fingerprint = fingerprint;
    this.#fileBytes = fileBytes;
    this.#stateDir = stateDir;
    this.#logger = options.logger;
    const { events } = options;
    this.#events =
      events === undefined
        ? undefined
        : {
            tracker: new SequenceKvTracker(LLAMACPP_KV_BLOCK_SIZE),
            sink: new KvEventSink({
              workerId: events.workerId,
              publisher: events.publisher,
              subject: events.kvEventsSubject ?? KV_EVENTS_TOPIC,
              logger: options.logger,
            }),
            publisher: events.publisher,
            workerId: events.workerId,
            loadMetricsSubject: events.loadMetricsSubject ?? LOAD_METRICS_TOPIC,
          };
    this.#ready = Promise.reject(new TdistError("internal", "engine not started"));
    this.#ready.catch(() => {});
    this.handler = (request, ctx) => this.generate(request, ctx);
  }

  /**
   * Reads the GGUF file's metadata (a corrupt or truncated file is a
   * `bad_request` naming it), starts the child and loads the model.
   */
  static async start(options: LlamaCppEngineOptions): Promise<LlamaCppEngine> {
    const resolved = resolveLlamaCppEngineOptions(options);
    const info = await readGgufFile(resolved.modelPath);
    const description = describeGgufModel(info);
    for (const warning of description.warnings) resolved.logger.warn({ modelPath: resolved.modelPath }, warning);
    const stateDir = await mkdtemp(join(resolved.tempDir ?? tmpdir(), "tdist-llamacpp-"));
    const engine = new LlamaCppEngine(resolved, description, info.headerSha256, info.fileSize, stateDir);
    try {
      engine.#ready = engine.#spawn();
      await engine.#ready;
    } catch (err) {
      engine.#state = "closed";
      await rm(stateDir, { recursive: true, force: true });
      throw err;
    }
    engine.#state = "running";
    return engine;
  }

  /**
   * Resolves with the cause once the engine has failed for good (its child
   * crashed more than `maxRestarts` times within `restartWindowMs`, or could
   * not be restarted); never rejects, and stays pending for an engine that
   * closes. A worker takes itself out of routing on it.
   */
  get failed(): Promise<TdistError> {
    return this.#failed;
  }

  get state(): LlamaCppEngineState {
    return this.#state;
  }

  /** The child's process id (tests kill it to check recovery). */
  get childPid(): number | undefined {
    return this.#child?.exited === false ? this.#child.process.pid : undefined;
  }

  /** Resolves once a child has the model loaded (after a restart, the new one); rejects when the engine failed or closed. */
  async ready(options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#childFor(options.signal);
  }

  stats(): LlamaCppEngineStats {
    return {
      state: this.#state,
      childPid: this.childPid,
      restarts: this.#restarts,
      activeRequests: this.#child?.requests.size ?? 0,
    };
  }

  modelInfo(): LlamaCppModelInfo {
    const ready = this.#lastReady as WorkerReady;
    return {
      ...this.#description,
      modelPath: this.options.modelPath,
      fileBytes: this.#fileBytes,
      fingerprint: this.#fingerprint,
      contextSize: ready.contextSize,
      sequences: ready.sequences,
      threads: ready.threads,
      eosTokenIds: [...this.#eosTokenIds(ready)],
    };
  }

  #eosTokenIds(ready: WorkerReady): number[] {
    if (this.#modelEosTokenIds !== undefined) return this.#modelEosTokenIds;
    // llama.cpp also treats vocabulary tokens that merely look like eog (Qwen's "</s>") as control tokens;
    // the frontend's tokenizer reads them as text, so they do not end a generation.
    const special = specialTokenIdsOf(this.#description.tokenizerJson);
    const eog = ready.eogTokenIds.filter((id) => special.has(id));
    const eos = this.#description.eosTokenId;
    this.#modelEosTokenIds = eos === undefined ? eog : [eos, ...eog.filter((id) => id !== eos)];
    return this.#modelEosTokenIds;
  }

  /** Tokenizer and card fields from the GGUF file, in the shape `serveModel` callers use. */
  modelAssets(): ModelAssets {
    const info = this.modelInfo();
    return {
      tokenizerJson: info.tokenizerJson,
      cardFields: {
        ...(info.chatTemplate !== undefined ? { chatTemplate: info.chatTemplate } : {}),
        ...(info.bosToken !== undefined ? { bosToken: info.bosToken } : {}),
        ...(info.eosToken !== undefined ? { eosToken: info.eosToken } : {}),
        addBosToken: info.addBosToken,
        eosTokenIds: info.eosTokenIds,
        contextLength: info.contextSize,
      },
      vocabSize: info.vocabSize,
    };
  }

  /** A model card (without its tokenizer source, which `serveModel` fills in). */
  modelCard(options: { name?: string; role?: WorkerRole } = {}): Omit<ModelCard, "tokenizer"> {
    const info = this.modelInfo();
    return {
      name: options.name ?? info.name,
      engine: "llamacpp",
      ...(options.role !== undefined ? { role: options.role } : {}),
      ...this.modelAssets().cardFields,
      kvBlockSize: LLAMACPP_KV_BLOCK_SIZE,
      limits: { maxSequences: info.sequences },
    };
  }

  /**
   * Generates from a preprocessed request. Ends with `finishReason`:
   * `"stop"` on an eos id (unless `ignoreEos`) or a stop token id once
   * `minTokens` are out (the stop token is included), `"length"` at
   * `maxTokens` or the end of the context, `"cancelled"` after
   * `ctx.stopGenerating()` (the last message carries any token already made),
   * `"error"` when the child fails (its `error` says why).
   * A kill ends the stream at once and frees the sequence.
   *
   * Disaggregated serving (`request.disaggregation`, needs `kvTransfer`):
   * a prefill-phase request answers one output, the first token, and either
   * its `finishReason` or `kvTransfer`, the offer of the prompt's KV state; a
   * decode-phase request fetches that state, continues from it and says on
   * its first output how it got it (`kvImport`: `fetched`, or `fallback`
   * when the transfer failed and the prompt was prefilled here).
   */
  async *generate(
    request: PreprocessedRequest,
    ctx: Context,
    options: LlamaCppGenerateOptions = {},
  ): AsyncGenerator<EngineOutput> {
    const workerRequest = this.#workerRequest(request);
    const phase = this.#disaggregationOf(request);
    if (phase !== undefined && options.kvState !== undefined) {
      throw new TdistError("bad_request", "a request takes a kvState or disaggregation, not both");
    }
    if (ctx.isKilled) return;
    if (workerRequest.maxTokens === 0) {
      yield { tokenIds: [], finishReason: "length", cachedTokens: 0 };
      return;
    }
    if (ctx.isStopped) {
      yield { tokenIds: [], finishReason: "cancelled", cachedTokens: 0 };
      return;
    }
    if (phase?.phase === "prefill") {
      yield* this.#prefillPhase(workerRequest, ctx);
      return;
    }
    if (phase?.phase === "decode") {
      yield* this.#decodePhase(workerRequest, phase, ctx);
      return;
    }
    let statePath: string | undefined;
    try {
      if (options.kvState !== undefined) {
        this.#checkState(options.kvState);
        statePath = await this.#writeStateFile(options.kvState.data);
        workerRequest.statePath = statePath;
      }
      yield* this.#run(workerRequest, ctx);
    } finally {
      if (statePath !== undefined) await rm(statePath, { force: true });
    }
  }

  /** Evaluates the prompt, samples its first token, and offers the prompt's state unless that token ends the request. */
  async *#prefillPhase(workerRequest: WorkerGenerateRequest, ctx: Context): AsyncGenerator<EngineOutput> {
    const plane = this.options.kvTransfer as KvTransferPlane;
    const path = join(this.#stateDir, `prefill-${++this.#nextId}.bin`);
    workerRequest.exportStatePath = path;
    let offer: KvTransferOffer | undefined;
    try {
      for await (const { exported, ...output } of this.#run(workerRequest, ctx)) {
        if (exported !== true) {
          yield output;
          continue;
        }
        // Held until fetched, the ttl, or close: a consumer that stops reading after this output still passes it on.
        offer = await this.#offerStateFile(plane, path);
        yield { ...output, kvTransfer: offer.handle };
      }
    } finally {
      if (offer === undefined) await rm(path, { force: true });
    }
  }

  async #offerStateFile(plane: KvTransferPlane, path: string): Promise<KvTransferOffer> {
    const source = await stateFileSource(path, this.#fingerprint);
    const offer = await plane.offer(source, { onRelease: () => rm(path, { force: true }) });
    this.#offers.add(offer);
    void offer.settled.then(() => this.#offers.delete(offer));
    return offer;
  }

  /** Fetches the prompt's state into a file the child loads, or prefills the prompt when the transfer fails. */
  async *#decodePhase(
    workerRequest: WorkerGenerateRequest,
    phase: DecodePhase,
    ctx: Context,
  ): AsyncGenerator<EngineOutput> {
    const plane = this.options.kvTransfer;
    let kvImport: KvImportOutcome = "fallback";
    let path: string | undefined;
    try {
      if (plane === undefined) {
        this.#logger.warn(
          { prefillWorkerId: phase.prefillWorkerId },
          "a decode-phase request reached a llama.cpp engine without a KV transfer plane; prefilling here",
        );
      } else {
        path = join(this.#stateDir, `decode-${++this.#nextId}.bin`);
        try {
          await writeTransferredState(plane.fetch(phase.kvTransfer, { signal: ctx.signal }), path, {
            modelFingerprint: this.#fingerprint,
            tokenIds: workerRequest.tokenIds.slice(0, phase.kvTokens),
            streams: this.#lastReady?.sequences ?? 1,
          });
          kvImport = "fetched";
          workerRequest.statePath = path;
          workerRequest.prefillOnBadState = true;
        } catch (err) {
          await rm(path, { force: true });
          path = undefined;
          if (ctx.isKilled) return;
          if (!isKvTransferFallback(err)) throw err;
          this.#logger.warn(
            {
              prefillWorkerId: phase.prefillWorkerId,
              transferId: phase.kvTransfer.transferId,
              code: (err as TdistError).code,
              error: (err as TdistError).message,
            },
            "KV transfer failed; prefilling here",
          );
        }
      }
      let first = true;
      for await (const output of this.#run(workerRequest, ctx)) {
        if (!first) {
          yield output;
          continue;
        }
        first = false;
        // The child has loaded it by its first output.
        if (path !== undefined) await rm(path, { force: true });
        path = undefined;
        if (output.kvImport === "fallback" && kvImport === "fetched") {
          this.#logger.warn(
            { prefillWorkerId: phase.prefillWorkerId, transferId: phase.kvTransfer.transferId },
            "the transferred KV state did not load; prefilled here",
          );
        }
        yield { ...output, kvImport: output.kvImport ?? kvImport };
      }
    } finally {
      if (path !== undefined) await rm(path, { force: true });
    }
  }

  /** Runs a request on the child: its outputs, with the credit flow that paces it. */
  async *#run(workerRequest: WorkerGenerateRequest, ctx: Context): AsyncGenerator<StreamItem> {
    const stream = new RequestStream();
    let child: WorkerChild | undefined;
    const id = ++this.#nextId;
    const onStop = (): void => {
      if (!ctx.isKilled) child?.send({ type: "stop", id });
    };
    const onKill = (): void => {
      child?.send({ type: "kill", id });
      stream.end();
    };
    ctx.stopSignal.addEventListener("abort", onStop, { once: true });
    ctx.signal.addEventListener("abort", onKill, { once: true });
    try {
      try {
        child = await this.#childFor(ctx.signal);
      } catch (err) {
        if (ctx.isKilled) return;
        // A failed engine says so as a crash, so a frontend moves the request to another worker.
        if (this.#state === "failed") {
          yield {
            tokenIds: [],
            finishReason: "error",
            error: this.#failure?.message ?? "",
            errorCode: "engine_crashed",
          };
          return;
        }
        throw err;
      }
      if (ctx.isKilled) return;
      if (child.exited) {
        yield {
          tokenIds: [],
          finishReason: "error",
          error: "llama.cpp child process exited",
          errorCode: "engine_crashed",
        };
        return;
      }
      child.requests.set(id, stream);
      child.send({ type: "generate", id, request: workerRequest });
      if (ctx.isStopped) onStop();
      const creditBatch = Math.max(1, Math.floor(this.options.creditWindow / 4));
      let consumed = 0;
      for await (const output of stream) {
        if (output.finishReason !== undefined || output.exported === true) stream.finished = true;
        yield output;
        consumed += output.tokenIds.length;
        if (consumed >= creditBatch && !stream.finished) {
          child.send({ type: "credit", id, tokens: consumed });
          consumed = 0;
        }
        if (stream.finished) return;
      }
    } finally {
      ctx.stopSignal.removeEventListener("abort", onStop);
      ctx.signal.removeEventListener("abort", onKill);
      if (child !== undefined) {
        // Ended early (kill or the consumer's `return()`): free the sequence.
        if (!stream.finished) child.send({ type: "kill", id });
        child.requests.delete(id);
      }
    }
  }

  /** The request's disaggregation phase, checked; undefined when it is served aggregated. */
  #disaggregationOf(request: PreprocessedRequest): PreprocessedRequest["disaggregation"] {
    const phase = request.disaggregation;
    if (phase === undefined || phase === null) return undefined;
    if (phase.phase === "prefill") {
      if (this.options.kvTransfer === undefined) {
        throw new TdistError(
          "bad_request",
          "this llama.cpp engine has no KV transfer plane: it cannot serve a prefill phase",
        );
      }
      return phase;
    }
    if (phase.phase === "decode") {
      if (typeof phase.kvTransfer !== "object" || phase.kvTransfer === null) {
        throw new TdistError("bad_request", "disaggregation.kvTransfer must be a KV transfer handle");
      }
      if (!isInteger(phase.kvTokens, 1, request.tokenIds.length - 1)) {
        throw new TdistError(
          "bad_request",
          `disaggregation.kvTokens must be an integer in [1, ${request.tokenIds.length - 1}] (the tokens before the last), got ${String(phase.kvTokens)}`,
        );
      }
      return phase;
    }
    throw new TdistError(
      "bad_request",
      `disaggregation.phase must be prefill or decode, got ${String((phase as { phase?: unknown }).phase)}`,
    );
  }

  /**
   * Prefill for disaggregated serving: evaluates `promptTokenIds` minus its
   * last token and returns that KV state, for `generate(..., { kvState })`
   * or `importSequenceState` in an engine with the same model.
   */
  async exportSequenceState(promptTokenIds: number[], options: { signal?: AbortSignal } = {}): Promise<SequenceState> {
    this.#checkTokens(promptTokenIds, "promptTokenIds");
    if (promptTokenIds.length < 2) {
      throw new TdistError("bad_request", "a prompt needs at least 2 tokens to export its state (all but the last)");
    }
    const tokenIds = promptTokenIds.slice(0, -1);
    const path = join(this.#stateDir, `export-${++this.#nextId}.bin`);
    try {
      const result = await this.#call({ kind: "exportState", tokenIds, path }, options.signal);
      if (result.tokenCount !== tokenIds.length) {
        throw new TdistError("internal", `exported ${result.tokenCount} tokens of state, expected ${tokenIds.length}`);
      }
      // One-stream form: importable by an engine with any sequence count.
      const data = withStreamCount(new Uint8Array(await readFile(path)), 1);
      return { tokenIds, data, modelFingerprint: this.#fingerprint };
    } finally {
      await rm(path, { force: true });
    }
  }

  /**
   * Loads a KV state into an idle sequence as a cached prefix: the next
   * request whose prompt extends `state.tokenIds` reuses it (reported as
   * `cachedTokens`). For a guaranteed reuse pass the state to `generate`.
   */
  async importSequenceState(
    state: SequenceState,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ tokenCount: number }> {
    this.#checkState(state);
    const path = await this.#writeStateFile(state.data);
    try {
      return await this.#call({ kind: "importState", path }, options.signal);
    } finally {
      await rm(path, { force: true });
    }
  }

  /** llama.cpp's own tokenization of `text` (special token text parsed as special tokens unless `specialTokens: false`). */
  async tokenize(text: string, options: { specialTokens?: boolean; signal?: AbortSignal } = {}): Promise<number[]> {
    const result = await this.#call(
      { kind: "tokenize", text, specialTokens: options.specialTokens ?? true },
      options.signal,
    );
    return result.tokenIds;
  }

  /** Stops the child (requests in flight end with `"error"`) and removes temporary files. */
  async close(): Promise<void> {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#failure = new TdistError("shutting_down", "the llama.cpp engine is closed");
    await Promise.all([...this.#offers].map((offer) => offer.release()));
    const child = this.#child;
    if (child !== undefined && !child.exited) {
      child.closing = true;
      const exited = new Promise<void>((resolve) => child.process.once("exit", () => resolve()));
      child.send({ type: "shutdown" });
      const timer = setTimeout(() => child.process.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(this.#stateDir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #checkTokens(tokenIds: unknown, name: string): asserts tokenIds is number[] {
    if (!Array.isArray(tokenIds) || tokenIds.length === 0) {
      throw new TdistError("bad_request", `${name} must be a non-empty array of token ids`);
    }
    const vocabSize = this.#description.vocabSize;
    for (const id of tokenIds) {
      // llama.cpp asserts on ids outside the vocabulary; refuse them here.
      if (!isInteger(id, 0, vocabSize - 1)) {
        throw new TdistError(
          "bad_request",
          `${name} holds ${String(id)}, not a token id of this model (0..${vocabSize - 1})`,
        );
      }
    }
    const contextSize = this.#lastReady?.contextSize;
    if (contextSize !== undefined && tokenIds.length >= contextSize) {
      throw new TdistError(
        "bad_request",
        `the prompt has ${tokenIds.length} tokens; the context holds ${contextSize} (prompt plus at least one generated token)`,
      );
    }
  }

  #checkState(state: SequenceState): void {
    if (state?.modelFingerprint !== this.#fingerprint) {
      throw new TdistError("bad_request", "the KV state was made by another model (its fingerprint differs)");
    }
    if (!(state.data instanceof Uint8Array) || !Array.isArray(state.tokenIds)) {
      throw new TdistError("bad_request", "a KV state needs tokenIds and data");
    }
    const tokens = stateTokens(state.data);
    if (tokens.length !== state.tokenIds.length || tokens.some((id, i) => id !== state.tokenIds[i])) {
      throw new TdistError("bad_request", "the KV state's tokenIds differ from the tokens its data holds");
    }
    const contextSize = this.#lastReady?.contextSize ?? 0;
    if (tokens.length >= contextSize) {
      throw new TdistError(
        "bad_request",
        `the KV state holds ${tokens.length} tokens; the context holds ${contextSize}`,
      );
    }
  }

  /** Writes a state file laid out for this engine's context (one KV stream per sequence). */
  async #writeStateFile(data: Uint8Array): Promise<string> {
    const path = join(this.#stateDir, `import-${++this.#nextId}.bin`);
    await writeFile(path, withStreamCount(data, this.#lastReady?.sequences ?? 1));
    return path;
  }

  #workerRequest(request: PreprocessedRequest): WorkerGenerateRequest {
    if (typeof request !== "object" || request === null)
      throw new TdistError("bad_request", "request must be an object");
    this.#checkTokens(request.tokenIds, "tokenIds");
    const stop = request.stop ?? { maxTokens: -1 };
    if (!isInteger(stop.maxTokens, 0)) {
      throw new TdistError("bad_request", `stop.maxTokens must be an integer >= 0, got ${String(stop.maxTokens)}`);
    }
    const minTokens = stop.minTokens ?? 0;
    if (!isInteger(minTokens, 0)) {
      throw new TdistError("bad_request", `stop.minTokens must be an integer >= 0, got ${String(stop.minTokens)}`);
    }
    const sampling = request.sampling ?? {};
    const topK = sampling.topK ?? 0;
    if (!isInteger(topK, 0) && topK !== -1) {
      throw new TdistError("bad_request", `sampling.topK must be an integer >= 0 (or -1), got ${String(topK)}`);
    }
    if (sampling.seed !== undefined && sampling.seed !== null && !isInteger(sampling.seed, Number.MIN_SAFE_INTEGER)) {
      throw new TdistError("bad_request", `sampling.seed must be an integer, got ${String(sampling.seed)}`);
    }
    const logprobs = request.output?.logprobs;
    if (logprobs !== undefined && logprobs !== null && !isInteger(logprobs, 0, MAX_TOP_LOGPROBS)) {
      throw new TdistError("bad_request", `output.logprobs must be an integer in [0, ${MAX_TOP_LOGPROBS}]`);
    }
    const tokenIdList = (ids: unknown, name: string): number[] => {
      if (ids === undefined || ids === null) return [];
      if (!Array.isArray(ids) || !ids.every((id) => isInteger(id, 0))) {
        throw new TdistError("bad_request", `${name} must be an array of token ids`);
      }
      return ids as number[];
    };
    const requestEos = tokenIdList(request.eosTokenIds, "eosTokenIds");
    const eosIds = requestEos.length > 0 ? requestEos : this.#eosTokenIds(this.#lastReady as WorkerReady);
    const stopTokenIds = [
      ...new Set([...tokenIdList(stop.stopTokenIds, "stop.stopTokenIds"), ...(stop.ignoreEos ? [] : eosIds)]),
    ];
    // llama.cpp falls back to the time in seconds: concurrent requests and n choices would repeat each other.
    const seed = sampling.seed ?? randomBytes(4).readUInt32LE(0);
    const logitBias = [...parseLogitBias(sampling.logitBias, this.#description.vocabSize)].map(
      ([id, bias]): [number, number] => [id, bias <= -LOGIT_BIAS_LIMIT ? Number.NEGATIVE_INFINITY : bias],
    );
    return {
      tokenIds: request.tokenIds,
      sampling: {
        temperature: finiteOr("temperature", sampling.temperature, 1, 0, 100),
        topP: finiteOr("topP", sampling.topP, 1, 0, 1),
        topK: topK === -1 ? 0 : topK,
        minP: finiteOr("minP", sampling.minP, 0, 0, 1),
        seed: seed >>> 0,
        logitBias,
        repetitionPenalty: finiteOr("repetitionPenalty", sampling.repetitionPenalty, 1, 0.01, 100),
        presencePenalty: finiteOr("presencePenalty", sampling.presencePenalty, 0, -2, 2),
        frequencyPenalty: finiteOr("frequencyPenalty", sampling.frequencyPenalty, 0, -2, 2),
      },
      maxTokens: stop.maxTokens,
      minTokens,
      stopTokenIds,
      suppressUntilMinTokens: minTokens > 0 ? stopTokenIds : [],
      ...(logprobs !== undefined && logprobs !== null ? { logprobs } : {}),
    };
  }

  /** The running child, waiting for a restart in progress; throws when the engine failed or closed. */
  async #childFor(signal?: AbortSignal): Promise<WorkerChild> {
    if (this.#failure !== undefined) throw this.#failure;
    if (signal === undefined) return this.#ready;
    signal.throwIfAborted();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(new TdistError("cancelled", "cancelled while the llama.cpp engine was starting"));
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([this.#ready, aborted]);
    } finally {
      if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
    }
  }

  async #call<K extends WorkerCall["kind"]>(
    call: Extract<WorkerCall, { kind: K }>,
    signal?: AbortSignal,
  ): Promise<WorkerCallResults[K]> {
    const child = await this.#childFor(signal);
    const callId = ++this.#nextId;
    return new Promise<WorkerCallResults[K]>((resolve, reject) => {
      if (child.exited) {
        reject(new TdistError("internal", "llama.cpp child process exited"));
        return;
      }
      child.calls.set(callId, { resolve: resolve as (result: unknown) => void, reject });
      child.send({ type: "call", callId, call });
    });
  }

  #spawn(): Promise<WorkerChild> {
    const { options } = this;
    const entry = llamaCppWorkerEntry();
    const proc = fork(entry.modulePath, [], {
      execArgv: entry.execArgv,
      serialization: "advanced",
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      // Its own session, out of the terminal's process group: Ctrl-C reaches this process only, which
      // decides when the child stops (a drain first). The child exits when its IPC channel closes,
      // so it never outlives this process, even a SIGKILLed one.
      detached: true,
    });
    const child = new WorkerChild(proc, this.#logger);
    this.#child = child;
    const config: WorkerConfig = {
      modelPath: options.modelPath,
      threads: options.threads,
      contextSize: options.contextSize ?? Math.min(this.#description.trainedContextLength ?? 4096, 4096),
      sequences: options.sequences,
      batchSize: options.batchSize,
      flashAttention: options.flashAttention,
      batchAcrossSequences: options.batchAcrossSequences,
      gpu: options.gpu,
      creditWindow: options.creditWindow,
      reportKvState: this.#events !== undefined,
      kvBlockSize: LLAMACPP_KV_BLOCK_SIZE,
    };
    child.send({ type: "init", config });
    const path = options.modelPath;
    return new Promise<WorkerChild>((resolve, reject) => {
      let settled = false;
      const settle = (err?: TdistError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err === undefined) {
          resolve(child);
          return;
        }
        if (!child.exited) proc.kill("SIGKILL");
        reject(err);
      };
      const timer = setTimeout(
        () => settle(new TdistError("timeout", `loading GGUF file ${path} took more than ${options.loadTimeoutMs} ms`)),
        options.loadTimeoutMs,
      );
      proc.on("message", (batch: ChildMessage[]) => {
        for (const message of batch) {
          if (message.type === "ready") {
            child.ready = message.ready;
            child.markLoaded();
            this.#lastReady = message.ready;
            this.#logger.info(
              { enginePid: message.ready.pid, modelPath: path, loadMs: Math.round(message.ready.loadMs) },
              "llama.cpp model loaded",
            );
            settle();
          } else if (message.type === "loadFailed") {
            settle(new TdistError("bad_request", `cannot load GGUF file ${path}: ${message.message}`));
          } else {
            this.#dispatch(child, message);
          }
        }
      });
      proc.on("error", (err) => {
        settle(TdistError.wrap(err, "internal", `cannot start the llama.cpp child process for ${path}`));
      });
      proc.on("exit", (code, signal) => {
        child.exited = true;
        const how = exitDescription(code, signal);
        const tail = child.stderrTail();
        settle(
          new TdistError(
            "bad_request",
            `cannot load GGUF file ${path}: the llama.cpp engine process exited ${how} while loading it${tail ? `: ${tail}` : ""}`,
          ),
        );
        this.#onExit(
          child,
          `llama.cpp engine process ${String(proc.pid)} exited ${how}${tail ? `; its last output: ${tail}` : ""}`,
        );
      });
    });
  }

  #dispatch(child: WorkerChild, message: ChildMessage): void {
    switch (message.type) {
      case "tokens": {
        const output: EngineOutput = { tokenIds: message.tokenIds };
        if (message.logprobs !== undefined) output.logprobs = message.logprobs as TokenLogprob[];
        if (message.cachedTokens !== undefined) output.cachedTokens = message.cachedTokens;
        if (message.kvImport !== undefined) output.kvImport = message.kvImport;
        child.requests.get(message.id)?.push(output);
        return;
      }
      case "done": {
        const stream = child.requests.get(message.id);
        if (stream === undefined) return;
        if (message.finishReason === "killed") {
          stream.end();
          return;
        }
        if (message.badRequest === true) {
          stream.refuse(message.error ?? "invalid request");
          return;
        }
        const output: StreamItem =
          message.finishReason === "exported"
            ? { tokenIds: message.tokenIds, exported: true }
            : { tokenIds: message.tokenIds, finishReason: message.finishReason };
        if (message.logprobs !== undefined) output.logprobs = message.logprobs as TokenLogprob[];
        if (message.cachedTokens !== undefined) output.cachedTokens = message.cachedTokens;
        if (message.kvImport !== undefined) output.kvImport = message.kvImport;
        if (message.error !== undefined) {
          output.error = message.error;
          this.#logger.warn({ requestId: message.id, error: message.error }, "llama.cpp request failed");
        }
        stream.push(output);
        return;
      }
      case "result": {
        const call = child.calls.get(message.callId);
        if (call === undefined) return;
        child.calls.delete(message.callId);
        if (message.error !== undefined) {
          call.reject(new TdistError(message.badRequest ? "bad_request" : "internal", message.error));
        } else {
          call.resolve(message.result);
        }
        return;
      }
      case "kvCache":
        if (child === this.#child) this.#onKvCache(message);
        return;
      case "load":
        if (child === this.#child) this.#publishLoad(message);
        return;
      default:
        return;
    }
  }

  /**
   * Re-sends what the sequences' KV caches hold as `cleared` then `stored`
   * events (a router saw a gap in this worker's event ids). No-op without
   * `events`.
   */
  async resyncKvEvents(): Promise<void> {
    const events = this.#events;
    if (events !== undefined) await events.sink.publish(events.tracker.resyncEvents());
  }

  /** Turns a sequence's KV cache change into KV events. */
  #onKvCache(message: Extract<ChildMessage, { type: "kvCache" }>): void {
    const events = this.#events;
    if (events === undefined) return;
    try {
      void events.sink.publish(events.tracker.update(message.sequence, message.keep, message.append));
    } catch (err) {
      // A report that does not fit what was reported before: start the router's view over.
      this.#logger.warn({ err }, "inconsistent KV cache report from the llama.cpp child; clearing");
      void events.sink.publish(events.tracker.clear());
    }
  }

  /** Publishes the child's load as `WorkerLoadMetrics` (the child reports only changes). */
  #publishLoad(load: Omit<Extract<ChildMessage, { type: "load" }>, "type">): void {
    const events = this.#events;
    const ready = this.#lastReady;
    if (events === undefined || ready === undefined) return;
    const totalKvBlocks = Math.floor((ready.sequences * ready.contextSize) / LLAMACPP_KV_BLOCK_SIZE);
    const metrics: WorkerLoadMetrics = {
      workerId: events.workerId,
      activeSequences: load.activeSequences,
      waitingSequences: load.waitingSequences,
      activeKvBlocks: load.activeKvBlocks,
      totalKvBlocks,
      kvUsage: totalKvBlocks > 0 ? Math.min(1, load.activeKvBlocks / totalKvBlocks) : 0,
      prefillTokensQueued: load.prefillTokensQueued,
    };
    events.publisher.publish(events.loadMetricsSubject, metrics).catch((err: unknown) => {
      this.#logger.warn({ err, workerId: events.workerId }, "publishing load metrics failed");
    });
  }

  /** A child exited: fail what was in flight and, unless closing or crashing too often, start another. */
  #onExit(child: WorkerChild, reason: string): void {
    // Its KV caches and its requests died with it.
    const events = this.#child === child ? this.#events : undefined;
    if (events !== undefined) {
      const held = events.tracker.heldBlocks;
      const cleared = events.tracker.clear();
      if (held > 0) void events.sink.publish(cleared);
      this.#publishLoad({ activeSequences: 0, waitingSequences: 0, activeKvBlocks: 0, prefillTokensQueued: 0 });
    }
    // Typed, so a frontend migrates these requests: the child died, not the requests.
    const errorCode = child.closing || this.#state === "closed" ? "engine_shutting_down" : "engine_crashed";
    for (const stream of child.requests.values()) {
      stream.push({ tokenIds: [], finishReason: "error", error: reason, errorCode });
    }
    child.requests.clear();
    for (const call of child.calls.values()) call.reject(new TdistError("internal", reason));
    child.calls.clear();
    if (child.closing || this.#state === "closed" || child.ready === undefined || this.#child !== child) return;
    this.#logger.error({ enginePid: child.process.pid, modelPath: this.options.modelPath }, `${reason}; restarting it`);
    const now = Date.now();
    this.#crashes = this.#crashes.filter((at) => now - at < this.options.restartWindowMs);
    this.#crashes.push(now);
    if (this.#crashes.length > this.options.maxRestarts) {
      this.#fail(
        new TdistError(
          "internal",
          `the llama.cpp engine gave up after ${this.#crashes.length} crashes in ${this.options.restartWindowMs} ms: ${reason}`,
        ),
      );
      return;
    }
    this.#state = "restarting";
    this.#restarts++;
    const next = this.#spawn();
    this.#ready = next;
    void next.then(
      () => {
        if (this.#state === "restarting") this.#state = "running";
      },
      (err: unknown) => this.#fail(TdistError.wrap(err, "internal", "the llama.cpp engine could not restart")),
    );
  }

  #fail(err: TdistError): void {
    if (this.#state === "closed") return;
    this.#state = "failed";
    this.#failure = err;
    this.#ready = Promise.reject(err);
    this.#ready.catch(() => {});
    this.#logger.error({ modelPath: this.options.modelPath, error: err.message }, "llama.cpp engine failed");
    this.#onFailed(err);
  }
}
