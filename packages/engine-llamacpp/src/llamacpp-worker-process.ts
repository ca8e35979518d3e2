/**
 * The llama.cpp child process of `LlamaCppEngine`. llama.cpp aborts the whole
 * process on a failed assertion (bad metadata, a KV state from another
 * model), so it runs here, away from the frontend and the runtime: the parent
 * sees the exit, fails the requests in flight and starts a new child.
 *
 * One model, one context with `sequences` sequences. Each request takes an
 * idle sequence (preferring the one whose cached tokens share the longest
 * prefix with its prompt) and runs its own `evaluate` loop; node-llama-cpp
 * batches the sequences' pending tokens into one decode per step, which is
 * continuous batching: requests join and leave between steps.
 *
 * Decodes batch across sequences (`SequenceBatching`); work that changes a
 * sequence's KV cache pauses decoding briefly (`DecodePause`) so it does not
 * wait for every other stream to end.
 *
 * Started by the parent only (it needs the IPC channel); see `worker-entry.ts`.
 */
import {
  getLlama,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  LlamaLogLevel,
  type LlamaModel,
  type Token,
  TokenBias,
} from "node-llama-cpp";
import { DecodePause } from "./decode-pause.js";
import type {
  ChildMessage,
  ParentMessage,
  WorkerCall,
  WorkerCallResults,
  WorkerConfig,
  WorkerGenerateRequest,
  WorkerTokenLogprob,
} from "./llamacpp-ipc.js";
import { oneSequencePerDecode, SequenceBatching } from "./sequence-batching.js";
import { commonPrefixLength, SequencePool, type SequenceSlot } from "./sequence-pool.js";

/** Errors the parent reports as the caller's fault, not the engine's. */
class BadRequestError extends Error {}

/** While a request generates, its sequence's KV cache is reported every this many tokens (and at its first and last). */
const KV_REPORT_EVERY = 64;

/** How many recent tokens repetition penalties look at (llama.cpp's `penalty_last_n` default). */
const PENALTY_WINDOW = 64;

let outbox: ChildMessage[] = [];
let flushScheduled = false;

function flush(): void {
  flushScheduled = false;
  const batch = outbox;
  outbox = [];
  if (batch.length > 0 && process.connected) process.send?.(batch);
}

/**
 * Queues a message for the parent. The batch goes out one event-loop turn
 * later: node-llama-cpp dispatches the next decode from a `setImmediate`
 * queued after this one, so the IPC write overlaps that decode instead of
 * delaying it.
 */
function send(message: ChildMessage): void {
  outbox.push(message);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(() => setImmediate(flush));
  }
}

/**
 * A TokenBias adding these logits. `TokenBias.set` skips eog ids (and maps
 * numbers as probabilities), so its map is filled directly.
 */
function tokenBiasOf(model: LlamaModel, logits: readonly [number, number][]): TokenBias {
  const bias = new TokenBias(model.tokenizer);
  const map = (bias as unknown as { _biases?: Map<number, number> })._biases;
  if (!(map instanceof Map)) throw new Error("token biases need node-llama-cpp's TokenBias internals (3.x)");
  for (const [id, logit] of logits) map.set(id, logit);
  return bias;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

interface ActiveRequest {
  id: number;
  request: WorkerGenerateRequest;
  stopRequested: boolean;
  killed: AbortController;
  credit: number;
  onCredit: (() => void) | undefined;
  /** Waiting for a sequence, computing its prompt, or generating: for load reports. */
  phase: "waiting" | "prefill" | "decode";
  /** Prompt tokens it computes (the prompt less the cached prefix), once it has a sequence. */
  toPrefill: number;
  /** Tokens in its sequence: the prompt, then each generated token. */
  tokens: number;
}

class Worker {
  readonly #active = new Map<number, ActiveRequest>();
  #llama: Llama | undefined;
  #model: LlamaModel | undefined;
  #context: LlamaContext | undefined;
  #pool: SequencePool | undefined;
  #config: WorkerConfig | undefined;
  readonly #pause = new DecodePause();
  /** The empty bias a `minTokens` request switches to once its minimum is out. */
  #noBias: TokenBias | undefined;
  /** What each sequence's KV cache held when last reported (`reportKvState`), by slot index. */
  readonly #reported: number[][] = [];
  #loadScheduled = false;
  #lastLoad = "";

  async init(config: WorkerConfig): Promise<void> {
    this.#config = config;
    const started = performance.now();
    try {
      const llama = await getLlama({
        gpu: config.gpu,
        build: "never",
        maxThreads: config.threads,
        logLevel: LlamaLogLevel.warn,
      });
      this.#llama = llama;
      const model = await llama.loadModel({ modelPath: config.modelPath });
      this.#model = model;
      const batching = new SequenceBatching();
      const context = await model.createContext({
        sequences: config.sequences,
        contextSize: config.contextSize,
        batchSize: config.batchSize,
        threads: config.threads,
        flashAttention: config.flashAttention,
        batching: {
          itemPrioritizationStrategy: config.batchAcrossSequences ? batching.prioritize : oneSequencePerDecode,
        },
      });
      batching.attach(context);
      this.#context = context;
      this.#pool = new SequencePool(context, config.sequences);
      this.#noBias = new TokenBias(model.tokenizer);
      const vocabSize = model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? 0;
      const eogTokenIds: number[] = [];
      for (let id = 0; id < vocabSize; id++) if (model.isEogToken(id as Token)) eogTokenIds.push(id);
      send({
        type: "ready",
        ready: {
          pid: process.pid,
          contextSize: context.contextSize,
          sequences: config.sequences,
          threads: context.idealThreads,
          vocabSize,
          eogTokenIds,
          bosTokenId: model.tokens.bos ?? undefined,
          eosTokenId: model.tokens.eos ?? undefined,
          loadMs: performance.now() - started,
        },
      });
    } catch (err) {
      send({ type: "loadFailed", message: errorText(err) });
    }
  }

  handle(message: ParentMessage): void {
    switch (message.type) {
      case "init":
        void this.init(message.config);
        return;
      case "generate": {
        const active: ActiveRequest = {
          id: message.id,
          request: message.request,
          stopRequested: false,
          killed: new AbortController(),
          credit: this.#config?.creditWindow ?? 256,
          onCredit: undefined,
          phase: "waiting",
          toPrefill: 0,
          tokens: message.request.tokenIds.length,
        };
        this.#active.set(message.id, active);
        this.#loadChanged();
        void this.#run(active);
        return;
      }
      case "stop": {
        const active = this.#active.get(message.id);
        if (active !== undefined) active.stopRequested = true;
        this.#wake(active);
        return;
      }
      case "kill": {
        const active = this.#active.get(message.id);
        active?.killed.abort();
        this.#wake(active);
        return;
      }
      case "credit": {
        const active = this.#active.get(message.id);
        if (active !== undefined) active.credit += message.tokens;
        this.#wake(active);
        return;
      }
      case "call":
        void this.#call(message.callId, message.call);
        return;
      case "shutdown":
        void this.shutdown();
        return;
    }
  }

  #wake(active: ActiveRequest | undefined): void {
    const resume = active?.onCredit;
    if (active !== undefined) active.onCredit = undefined;
    resume?.();
  }

  async #run(active: ActiveRequest): Promise<void> {
    const { request } = active;
    const model = this.#model;
    const pool = this.#pool;
    if (model === undefined || pool === undefined || this.#noBias === undefined) {
      send({ type: "done", id: active.id, finishReason: "error", tokenIds: [], error: "model not loaded" });
      this.#active.delete(active.id);
      return;
    }
    let slot: SequenceSlot | undefined;
    let cachedTokens = 0;
    let firstMessage = true;
    let kvImport: "fallback" | undefined;
    const firstExtras = (): { cachedTokens?: number; kvImport?: "fallback" } =>
      firstMessage ? { cachedTokens, ...(kvImport !== undefined ? { kvImport } : {}) } : {};
    const pendingTokens: number[] = [];
    const pendingLogprobs: WorkerTokenLogprob[] = [];
    const done = (
      finishReason: Extract<ChildMessage, { type: "done" }>["finishReason"],
      extra: { error?: string; badRequest?: boolean } = {},
    ): void => {
      send({
        type: "done",
        id: active.id,
        finishReason,
        tokenIds: pendingTokens.splice(0),
        ...(request.logprobs !== undefined ? { logprobs: pendingLogprobs.splice(0) } : {}),
        ...firstExtras(),
        ...extra,
      });
    };
    try {
      try {
        slot = await pool.acquire(request.tokenIds, active.killed.signal);
      } catch {
        done("killed");
        return;
      }
      const sequence = slot.sequence;
      const prompt = request.tokenIds;
      if (request.statePath !== undefined) {
        const statePath = request.statePath;
        let problem: string | undefined;
        try {
          await this.#pause.during(() => sequence.loadStateFromFile(statePath, { acceptRisk: true }));
          const loaded = sequence.contextTokens;
          if (loaded.length >= prompt.length || commonPrefixLength(loaded, prompt) !== loaded.length) {
            problem = `the KV state holds ${loaded.length} tokens that are not a proper prefix of the ${prompt.length}-token prompt`;
          }
        } catch (err) {
          if (request.prefillOnBadState !== true) throw err;
          problem = errorText(err);
        }
        if (problem !== undefined) {
          await this.#pause.during(() => sequence.clearHistory());
          if (request.prefillOnBadState !== true) throw new BadRequestError(problem);
          kvImport = "fallback";
        }
      }
      // Reuse the sequence's cached prefix; at least the last prompt token is evaluated, for its logits.
      const keep = Math.min(commonPrefixLength(sequence.contextTokens, prompt), prompt.length - 1);
      await this.#eraseFrom(sequence, keep);
      cachedTokens = keep;
      active.phase = "prefill";
      active.toPrefill = prompt.length - keep;
      this.#loadChanged();
      if (active.killed.signal.aborted) {
        done("killed");
        return;
      }
      if (active.stopRequested) {
        done("cancelled");
        return;
      }

      const { sampling } = request;
      const penalize =
        sampling.repetitionPenalty !== 1 || sampling.presencePenalty !== 0 || sampling.frequencyPenalty !== 0;
      // The tokens penalties look at: the prompt's tail, then the output (llama.cpp's window, not vLLM's split).
      const history: number[] = penalize ? prompt.slice(-PENALTY_WINDOW) : [];
      // The caller's logit bias, plus stop and eos ids at -inf until `minTokens` are out.
      const userBias = sampling.logitBias.length > 0 ? tokenBiasOf(model, sampling.logitBias) : this.#noBias;
      const suppress = tokenBiasOf(model, [
        ...sampling.logitBias,
        ...request.suppressUntilMinTokens.map((id): [number, number] => [id, Number.NEGATIVE_INFINITY]),
      ]);
      let generated = 0;
      const stopIds = new Set(request.stopTokenIds);
      const contextRoom = sequence.contextSize - prompt.length;
      const maxTokens = Math.min(request.maxTokens, contextRoom);
      const wantLogprobs = request.logprobs !== undefined;
      const topLogprobs = request.logprobs ?? 0;

      const iterator = sequence.evaluateWithMetadata(
        prompt.slice(keep) as Token[],
        { confidence: wantLogprobs, probabilities: topLogprobs > 0 },
        {
          temperature: sampling.temperature,
          topK: sampling.topK,
          topP: sampling.topP,
          minP: sampling.minP,
          seed: sampling.seed,
          ...(penalize
            ? {
                repeatPenalty: {
                  punishTokens: () => history.slice(-PENALTY_WINDOW) as Token[],
                  maxPunishTokens: PENALTY_WINDOW,
                  penalty: sampling.repetitionPenalty,
                  presencePenalty: sampling.presencePenalty,
                  frequencyPenalty: sampling.frequencyPenalty,
                },
              }
            : {}),
          // Only with min tokens or a logit bias, so other requests carry no per-step bias work.
          ...(request.suppressUntilMinTokens.length > 0
            ? { tokenBias: () => (generated < request.minTokens ? suppress : userBias) }
            : sampling.logitBias.length > 0
              ? { tokenBias: userBias }
              : {}),
          yieldEogToken: true,
        },
      );
      for await (const result of iterator) {
        const output = result as { token: Token; confidence?: number; probabilities?: Map<Token, number> };
        const token = output.token as number;
        generated++;
        active.tokens++;
        // The load changes when the prefill ends and when the sequence starts a new KV block, not per token.
        if (active.phase !== "decode" || active.tokens % (this.#config?.kvBlockSize ?? 16) === 1) {
          active.phase = "decode";
          this.#loadChanged();
        }
        if (penalize) {
          history.push(token);
          if (history.length > 4 * PENALTY_WINDOW) history.splice(0, history.length - PENALTY_WINDOW);
        }
        pendingTokens.push(token);
        if (wantLogprobs) {
          const logprob: WorkerTokenLogprob = { tokenId: token, logprob: Math.log(output.confidence ?? 0) };
          if (topLogprobs > 0 && output.probabilities !== undefined) {
            const top: { tokenId: number; logprob: number }[] = [];
            for (const [tokenId, probability] of output.probabilities) {
              if (top.length >= topLogprobs) break;
              top.push({ tokenId: tokenId as number, logprob: Math.log(probability) });
            }
            logprob.top = top;
          }
          pendingLogprobs.push(logprob);
        }
        if (stopIds.has(token) && generated >= request.minTokens) return done("stop");
        if (generated >= maxTokens) return done("length");
        if (active.killed.signal.aborted) return done("killed");
        if (active.stopRequested) return done("cancelled");
        if (request.exportStatePath !== undefined) {
          const exportPath = request.exportStatePath;
          // The token just sampled is evaluated on the next step only: the sequence holds exactly the prompt.
          if (sequence.contextTokens.length !== prompt.length) {
            throw new Error(
              `after the first token the sequence holds ${sequence.contextTokens.length} tokens, not the prompt's ${prompt.length}`,
            );
          }
          await this.#pause.during(() => sequence.saveStateToFile(exportPath));
          return done("exported");
        }
        send({
          type: "tokens",
          id: active.id,
          tokenIds: pendingTokens.splice(0),
          ...(wantLogprobs ? { logprobs: pendingLogprobs.splice(0) } : {}),
          ...firstExtras(),
        });
        if (firstMessage || generated % KV_REPORT_EVERY === 0) this.#reportKvCache(slot);
        firstMessage = false;
        if (this.#pause.paused) await this.#pause.resumed();
        active.credit--;
        while (active.credit <= 0 && !active.killed.signal.aborted && !active.stopRequested) {
          await new Promise<void>((resolve) => {
            active.onCredit = resolve;
          });
        }
        if (active.killed.signal.aborted) return done("killed");
        if (active.stopRequested) return done("cancelled");
      }
      // The library ends the stream itself only when sampling fails to produce a token.
      done("error", { error: "llama.cpp produced no next token" });
    } catch (err) {
      done("error", { error: errorText(err), ...(err instanceof BadRequestError ? { badRequest: true } : {}) });
    } finally {
      this.#active.delete(active.id);
      this.#loadChanged();
      if (slot !== undefined) {
        this.#reportKvCache(slot);
        pool.release(slot);
      }
    }
  }

  /** Tells the parent what changed in a sequence's KV cache since the last report (for KV events). */
  #reportKvCache(slot: SequenceSlot): void {
    if (this.#config?.reportKvState !== true) return;
    const held = slot.sequence.contextTokens as number[];
    const before = this.#reported[slot.index] ?? [];
    const keep = commonPrefixLength(before, held);
    if (keep === before.length && keep === held.length) return;
    this.#reported[slot.index] = held;
    send({ type: "kvCache", sequence: slot.index, keep, append: held.slice(keep) });
  }

  /** Reports the load to the parent once this turn's changes are in, if it changed (`reportKvState`). */
  #loadChanged(): void {
    if (this.#loadScheduled || this.#config?.reportKvState !== true) return;
    this.#loadScheduled = true;
    setImmediate(() => {
      this.#loadScheduled = false;
      const blockSize = this.#config?.kvBlockSize ?? 16;
      let activeSequences = 0;
      let waitingSequences = 0;
      let activeKvBlocks = 0;
      let prefillTokensQueued = 0;
      for (const active of this.#active.values()) {
        if (active.phase === "waiting") {
          waitingSequences++;
          continue;
        }
        activeSequences++;
        activeKvBlocks += Math.ceil(active.tokens / blockSize);
        if (active.phase === "prefill") prefillTokensQueued += active.toPrefill;
      }
      const key = `${activeSequences}/${waitingSequences}/${activeKvBlocks}/${prefillTokensQueued}`;
      if (key === this.#lastLoad) return;
      this.#lastLoad = key;
      send({ type: "load", activeSequences, waitingSequences, activeKvBlocks, prefillTokensQueued });
    });
  }

  /** Drops the sequence's tokens from `start` on, pausing decoding so the erase need not wait for the other streams. */
  async #eraseFrom(sequence: LlamaContextSequence, start: number): Promise<void> {
    if (sequence.nextTokenIndex <= start) return;
    await this.#pause.during(() => sequence.eraseContextTokenRanges([{ start, end: sequence.nextTokenIndex }]));
  }

  async #call(callId: number, call: WorkerCall): Promise<void> {
    try {
      const result = await this.#callResult(call);
      send({ type: "result", callId, result });
    } catch (err) {
      send({
        type: "result",
        callId,
        error: errorText(err),
        ...(err instanceof BadRequestError ? { badRequest: true } : {}),
      });
    }
  }

  async #callResult(call: WorkerCall): Promise<WorkerCallResults[keyof WorkerCallResults]> {
    const model = this.#model;
    const pool = this.#pool;
    if (model === undefined || pool === undefined) throw new Error("model not loaded");
    switch (call.kind) {
      case "tokenize":
        return { tokenIds: model.tokenize(call.text, call.specialTokens) as number[] };
      case "exportState": {
        const slot = await pool.acquire(call.tokenIds);
        try {
          const sequence = slot.sequence;
          const keep = commonPrefixLength(sequence.contextTokens, call.tokenIds);
          await this.#eraseFrom(sequence, keep);
          if (keep < call.tokenIds.length) {
            await sequence.evaluateWithoutGeneratingNewTokens(call.tokenIds.slice(keep) as Token[]);
          }
          const { fileSize } = await sequence.saveStateToFile(call.path);
          return { tokenCount: sequence.nextTokenIndex, bytes: fileSize };
        } finally {
          this.#reportKvCache(slot);
          pool.release(slot);
        }
      }
      case "importState": {
        const slot = await pool.acquire([]);
        try {
          await this.#pause.during(() => slot.sequence.loadStateFromFile(call.path, { acceptRisk: true }));
          return { tokenCount: slot.sequence.nextTokenIndex };
        } finally {
          this.#reportKvCache(slot);
          pool.release(slot);
        }
      }
    }
  }

  async shutdown(): Promise<void> {
    for (const active of this.#active.values()) active.killed.abort();
    try {
      await this.#context?.dispose();
      await this.#model?.dispose();
      await this.#llama?.dispose();
    } finally {
      flush();
      process.exit(0);
    }
  }
}

if (process.send === undefined) {
  process.stderr.write("llamacpp-worker-process is started by LlamaCppEngine (it needs an IPC channel)\n");
  process.exit(2);
}

const worker = new Worker();
process.on("message", (batch: ParentMessage[]) => {
  for (const message of batch) worker.handle(message);
});
// An orphaned child (parent gone) has no one to serve.
process.on("disconnect", () => process.exit(0));
