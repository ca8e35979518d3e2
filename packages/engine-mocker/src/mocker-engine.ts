import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import {
  chainBlockHash,
  computeBlockHashes,
  type DecodePhase,
  type EngineOutput,
  type FinishReason,
  KvEventSink,
  type KvStoredBlock,
  type PreprocessedRequest,
  parseLogitBias,
  type WorkerLoadMetrics,
} from "@tdist/llm";
import { type Context, isKvTransferFallback, type KvTransferPlane, TdistError } from "@tdist/runtime";
import { type KvBlock, KvBlockPool } from "./kv-block-pool.js";
import { kvTransferMs } from "./kv-transfer-model.js";
import { encodeKvPayload, verifyKvPayload } from "./mocker-kv-payload.js";
import { type MockerEngineOptions, type ResolvedMockerOptions, resolveMockerOptions } from "./mocker-options.js";
import { MockerSequence } from "./mocker-sequence.js";
import { type StepWork, stepDurationMs } from "./timing-model.js";
import { TokenSampler } from "./token-sampler.js";

/** A snapshot of the engine, for tests and status output. */
export interface MockerStats extends WorkerLoadMetrics {
  /** Blocks an allocation could take now (never used plus evictable cached). */
  freeKvBlocks: number;
  /** Blocks registered in the prefix cache, in use or evictable. */
  cachedKvBlocks: number;
  steps: number;
  preemptions: number;
  /** Most sequences that ran in one step so far. */
  peakRunningSequences: number;
}

export type MockerEngineState = "running" | "closed";

/**
 * What an engine is busy with outside its step loop, for a driver that runs
 * many engines on one discrete-event clock and must know when all of them
 * are waiting on the clock (see `MockerEngine.activity`).
 */
export interface MockerActivity {
  /** Sequences in the engine (running or waiting): the step loop has work, so it is stepping or about to. */
  sequences: number;
  /** Prefill-phase answers waiting out their transfer time on the clock. */
  transferWaits: number;
  /** KV offers being registered and fetches running: off the clock, so the driver lets them finish first. */
  kvTransfers: number;
}

/** One sequence's share of a step, decided before the step's time passes. */
interface ScheduledChunk {
  sequence: MockerSequence;
  tokens: number;
}

/**
 * A GPU-free simulation of a vLLM-like engine, like Dynamo's mocker: it
 * generates pseudo-random tokens with realistic *behaviour* (paged KV cache,
 * prefix caching, LRU eviction, continuous batching, chunked prefill,
 * preemption, a step timing model) and publishes real KV events and load
 * metrics, so routers and frontends can be exercised at scale without GPUs.
 *
 * Each step: running sequences first (a decode token each, or their next
 * prefill chunk; when blocks run out the most recently admitted are
 * preempted and recomputed later), then waiting ones admitted in arrival
 * order while under `maxNumSeqs` and the `maxNumBatchedTokens` budget, their
 * cached prefix blocks reused. The step's simulated time then passes, its
 * results are applied (blocks filled are registered and `stored` events
 * published, one token sampled per sequence whose pending tokens are all
 * computed), and load metrics are published when they changed.
 *
 * ```ts
 * const engine = new MockerEngine({ speedupRatio: 10, eventPublisher, workerId });
 * await endpoint.serve(engine.handler);
 * // ...
 * await engine.close();
 * ```
 */
export class MockerEngine {
  readonly options: ResolvedMockerOptions;
  /** The `generate` endpoint handler, bound to this engine. */
  readonly handler: (request: PreprocessedRequest, ctx: Context) => AsyncGenerator<EngineOutput>;
  private readonly pool: KvBlockPool;
  private readonly waiting: MockerSequence[] = [];
  private readonly running: MockerSequence[] = [];
  private readonly closeController = new AbortController();
  private loop: Promise<void> | undefined;
  private wakeLoop: (() => void) | undefined;
  /** News (a request, a removal) came while the loop was busy, not waiting: it looks again before waiting. */
  private wakePending = false;
  private nextSequenceId = 0;
  private readonly kvEvents: KvEventSink | undefined;
  private steps = 0;
  private preemptions = 0;
  private peakRunning = 0;
  private lastMetricsKey = "";
  private transferWaits = 0;
  private kvTransfers = 0;

  constructor(options: MockerEngineOptions = {}) {
    this.options = resolveMockerOptions(options);
    this.pool = new KvBlockPool(this.options.totalKvBlocks);
    const { eventPublisher, kvEventsSubject, workerId, logger } = this.options;
    this.kvEvents =
      eventPublisher === undefined
        ? undefined
        : new KvEventSink({ workerId, publisher: eventPublisher, subject: kvEventsSubject, logger });
    this.handler = (request, ctx) => this.generate(request, ctx);
  }

  get state(): MockerEngineState {
    return this.closeController.signal.aborted ? "closed" : "running";
  }

  activity(): MockerActivity {
    return {
      sequences: this.running.length + this.waiting.length,
      transferWaits: this.transferWaits,
      kvTransfers: this.kvTransfers,
    };
  }

  stats(): MockerStats {
    return {
      ...this.loadMetrics(),
      freeKvBlocks: this.pool.allocatableBlocks,
      cachedKvBlocks: this.pool.cachedBlocks,
      steps: this.steps,
      preemptions: this.preemptions,
      peakRunningSequences: this.peakRunning,
    };
  }

  /**
   * Runs one request: one message per generated token (the first carries
   * `cachedTokens`), the last with its `finishReason`. A graceful stop ends
   * with an empty `"cancelled"` message; a kill (or `return()`) ends at once
   * and frees the sequence's KV blocks synchronously.
   *
   * With `disaggregation` (see `PrefillPhase` and `DecodePhase`): a prefill
   * phase answers one message, the first token with either its
   * `finishReason` or `kvTransfer` (the offer of the prompt's KV, sent
   * after the transfer time the bandwidth gives; the prompt's blocks stay
   * held until the offer ends, then stay cached). A decode phase fetches
   * and checks the offer first, then admits the prompt as computed (no
   * prefill time) and continues the prefill worker's token stream; when the
   * fetch fails it prefills the prompt itself. Its first message says which
   * (`kvImport`).
   */
  async *generate(request: PreprocessedRequest, ctx: Context): AsyncGenerator<EngineOutput> {
    if (this.state === "closed") throw new TdistError("shutting_down", "mocker engine is closed");
    const sequence = this.createSequence(request);
    const phase = request.disaggregation;
    if (phase?.phase === "decode") await this.importKv(sequence, phase, ctx);
    if (sequence.maxTokens === 0) {
      yield this.withFirstOutputFields(sequence, { tokenIds: [], finishReason: "length" });
      return;
    }
    if (ctx.isStopped) {
      if (!ctx.isKilled) yield this.withFirstOutputFields(sequence, { tokenIds: [], finishReason: "cancelled" });
      return;
    }
    const onStop = (): void => this.finish(sequence, "cancelled");
    ctx.stopSignal.addEventListener("abort", onStop, { once: true });
    this.waiting.push(sequence);
    this.ensureLoop();
    try {
      while (true) {
        const message = await sequence.outputs.next(ctx.signal);
        if (message === undefined || ctx.isKilled) return;
        if (sequence.handoffBlocks !== undefined) {
          const answer = await this.handOff(sequence, sequence.handoffBlocks, message, ctx);
          if (answer !== undefined) yield answer;
          return;
        }
        yield message;
        if (message.finishReason !== undefined) return;
      }
    } finally {
      ctx.stopSignal.removeEventListener("abort", onStop);
      // Killed, broken out of, or finished: either way the blocks go back now.
      this.remove(sequence);
    }
  }

  /** Ends every request (they fail with `shutting_down`), frees their blocks and stops the step loop. */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    this.closeController.abort();
    for (const sequence of [...this.running, ...this.waiting]) {
      this.remove(sequence);
      sequence.outputs.end(new TdistError("shutting_down", "mocker engine closed"));
    }
    this.wakeLoop?.();
    await this.loop;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private requireKvTransfer(): KvTransferPlane {
    const plane = this.options.kvTransfer;
    if (plane === undefined) {
      throw new TdistError(
        "bad_request",
        "this mocker worker has no KV transfer plane: it serves no disaggregated requests",
      );
    }
    return plane;
  }

  /**
   * A prefill phase's one answer, once its first token is out and it did not
   * end the request: the transfer time passes (the blocks still held), then
   * the payload is offered; the offer's end releases the blocks to the
   * prefix cache. Undefined when the request was killed meanwhile.
   */
  private async handOff(
    sequence: MockerSequence,
    blocks: KvBlock[],
    message: EngineOutput,
    ctx: Context,
  ): Promise<EngineOutput | undefined> {
    sequence.handoffBlocks = undefined;
    const { clock, speedupRatio, kvBytesPerToken, kvTransferGbps, blockSize } = this.options;
    let held = true;
    const release = (): void => {
      if (!held) return;
      held = false;
      this.pool.release(blocks);
      // Freed outside a step: an idle loop republishes load metrics.
      this.wake();
    };
    let offered = false;
    const promptTokens = sequence.tokens.length - 1;
    try {
      const waitMs = kvTransferMs(promptTokens, kvBytesPerToken, kvTransferGbps) / speedupRatio;
      this.transferWaits++;
      try {
        await clock.sleep(waitMs, AbortSignal.any([ctx.signal, ctx.stopSignal, this.closeController.signal]));
      } finally {
        this.transferWaits--;
      }
      if (ctx.isKilled) return undefined;
      if (this.state === "closed") throw new TdistError("shutting_down", "mocker engine closed");
      if (ctx.isStopped) return { ...message, finishReason: "cancelled" };
      const payload = encodeKvPayload(sequence.tokens.slice(0, promptTokens), blockSize);
      // Not the request's signal: the offer outlives this answer until the decode worker fetches it.
      this.kvTransfers++;
      try {
        const offer = await this.requireKvTransfer().offer(payload, {
          signal: this.closeController.signal,
          onRelease: release,
        });
        offered = true;
        return { ...message, kvTransfer: offer.handle };
      } finally {
        this.kvTransfers--;
      }
    } finally {
      // Until the offer exists the blocks are this call's; after, the offer's release returns them.
      if (!offered) release();
    }
  }

  private createSequence(request: PreprocessedRequest): MockerSequence {
    const { options } = this;
    if (!Array.isArray(request?.tokenIds)) throw new TdistError("bad_request", "tokenIds must be an array");
    const prompt = request.tokenIds;
    for (const token of prompt) {
      if (!Number.isInteger(token) || token < 0 || token > 0xffff_ffff) {
        throw new TdistError("bad_request", `token id ${String(token)} is not a u32`);
      }
    }
    if (prompt.length === 0) throw new TdistError("bad_request", "the prompt has no tokens");
    const maxTokens = request.stop?.maxTokens;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) {
      throw new TdistError("bad_request", `stop.maxTokens must be an integer >= 0, got ${String(maxTokens)}`);
    }
    // One token of room is needed to sample; more than the whole cache can never run.
    if (Math.ceil((prompt.length + 1) / options.blockSize) > options.totalKvBlocks) {
      throw new TdistError(
        "bad_request",
        `prompt of ${prompt.length} tokens exceeds the KV cache (${options.totalKvBlocks} blocks of ${options.blockSize})`,
      );
    }
    if (!options.enableChunkedPrefill && prompt.length > options.maxNumBatchedTokens) {
      throw new TdistError(
        "bad_request",
        `prompt of ${prompt.length} tokens exceeds maxNumBatchedTokens (${options.maxNumBatchedTokens}) without chunked prefill`,
      );
    }
    const phase = request.disaggregation;
    if (phase !== undefined) {
      this.requireKvTransfer();
      if (phase.phase === "decode") {
        if (!Number.isInteger(phase.kvTokens) || phase.kvTokens < 1 || phase.kvTokens >= prompt.length) {
          throw new TdistError(
            "bad_request",
            `disaggregation.kvTokens must be an integer in [1, ${prompt.length - 1}] (the prompt without the first output token), got ${String(phase.kvTokens)}`,
          );
        }
        if (typeof phase.kvTransfer !== "object" || phase.kvTransfer === null) {
          throw new TdistError("bad_request", "disaggregation.kvTransfer must be a KV transfer handle");
        }
      } else if (phase.phase !== "prefill") {
        throw new TdistError(
          "bad_request",
          `disaggregation.phase must be prefill or decode, got ${JSON.stringify((phase as { phase: unknown }).phase)}`,
        );
      }
    }
    const eos = new Set(request.eosTokenIds ?? []);
    const stopIds = new Set(request.stop.stopTokenIds ?? []);
    if (!request.stop.ignoreEos) for (const id of eos) stopIds.add(id);
    const sampling = request.sampling ?? {};
    // Greedy (temperature 0, no seed): each token follows from the sequence so far, so a decode phase or a
    // migrated continuation (prompt + tokens so far) goes on exactly as an undisturbed run would.
    const greedy =
      sampling.temperature === 0 &&
      !(sampling.seed !== undefined && sampling.seed !== null && Number.isFinite(sampling.seed));
    // A seeded decode phase continues the prefill worker's stream: seeded by the same prompt, one draw further.
    const seedPrompt = phase?.phase === "decode" && !greedy ? prompt.slice(0, phase.kvTokens) : prompt;
    const sampler = new TokenSampler({
      seed: TokenSampler.seedFor(sampling.seed, sampling.temperature, seedPrompt),
      vocabSize: options.vocabSize,
      // Never sample eos: the mocker ends by length or by a stop id it happens to draw.
      excluded: eos,
      logitBias: parseLogitBias(sampling.logitBias, options.vocabSize),
      ...(greedy ? { greedyContext: prompt } : {}),
    });
    for (let drawn = seedPrompt.length; drawn < prompt.length; drawn++) sampler.next();
    const sequence = new MockerSequence(
      this.nextSequenceId++,
      prompt,
      maxTokens,
      request.stop.minTokens ?? 0,
      stopIds,
      sampler,
    );
    sequence.prefillOnly = phase?.phase === "prefill";
    return sequence;
  }

  /**
   * Fetches a decode phase's KV cache and checks it is this prompt's. On a
   * failure a receiver answers by computing the KV itself (the transfer is
   * gone, broken, late or not this prompt's), the prompt is prefilled here.
   */
  private async importKv(sequence: MockerSequence, phase: DecodePhase, ctx: Context): Promise<void> {
    const plane = this.requireKvTransfer();
    const { logger, workerId } = this.options;
    this.kvTransfers++;
    try {
      const chunks: Uint8Array[] = [];
      for await (const chunk of plane.fetch(phase.kvTransfer, { signal: ctx.signal })) chunks.push(chunk);
      verifyKvPayload(Buffer.concat(chunks), sequence.tokens.slice(0, phase.kvTokens));
      sequence.importedTokens = phase.kvTokens;
      sequence.kvImport = "fetched";
    } catch (err) {
      if (!isKvTransferFallback(err)) throw err;
      logger.warn(
        { err, workerId, prefillWorkerId: phase.prefillWorkerId, transferId: phase.kvTransfer.transferId },
        "KV transfer failed: prefilling locally",
      );
      sequence.kvImport = "fallback";
    } finally {
      this.kvTransfers--;
    }
  }

  /** Wakes an idle loop, or tells a busy one (stepping or publishing) to look again before it waits. */
  private wake(): void {
    if (this.wakeLoop !== undefined) this.wakeLoop();
    else this.wakePending = true;
  }

  private ensureLoop(): void {
    if (this.loop !== undefined) {
      this.wake();
      return;
    }
    this.loop = this.runLoop().catch((err: unknown) => {
      this.options.logger.error({ err, workerId: this.options.workerId }, "mocker step loop failed");
      // In-band and typed: the engine failed, not the requests, so a frontend moves them to another worker.
      for (const sequence of [...this.running, ...this.waiting]) {
        this.remove(sequence);
        sequence.outputs.push({
          tokenIds: [],
          finishReason: "error",
          error: "the mocker engine's step loop failed",
          errorCode: "engine_crashed",
        });
        sequence.outputs.end();
      }
      this.loop = undefined;
    });
  }

  private async runLoop(): Promise<void> {
    const { clock, speedupRatio, timing } = this.options;
    const closed = this.closeController.signal;
    // Requests arriving in the same turn of the event loop share the first step.
    await yieldToEventLoop();
    while (!closed.aborted) {
      const work = this.running.length + this.waiting.length > 0 ? this.schedule() : [];
      if (work.length === 0) {
        // Idle (or, defensively, nothing schedulable): publish the final state, then wait for news.
        await this.publishEvents();
        await this.publishLoadMetrics();
        if (closed.aborted) break;
        if (this.wakePending) {
          this.wakePending = false;
          continue;
        }
        await new Promise<void>((resolve) => {
          this.wakeLoop = resolve;
        });
        this.wakeLoop = undefined;
        continue;
      }
      const stepWork: StepWork = { prefillChunks: [], decodeSequences: 0, decodeKvBlocks: 0 };
      let scheduledTokens = 0;
      for (const { sequence, tokens } of work) {
        scheduledTokens += tokens;
        if (sequence.isDecoding) {
          stepWork.decodeSequences++;
          stepWork.decodeKvBlocks += sequence.blocks.length;
        } else {
          stepWork.prefillChunks.push({ newTokens: tokens, contextEnd: sequence.numComputed + tokens });
        }
      }
      this.peakRunning = Math.max(this.peakRunning, this.running.length);
      const durationMs = stepDurationMs(timing, stepWork) / speedupRatio;
      const startedAtMs = clock.now();
      await clock.sleep(durationMs, closed);
      if (closed.aborted) break;
      this.apply(work);
      const index = this.steps++;
      this.options.onStep?.({
        index,
        startedAtMs,
        durationMs,
        scheduledTokens,
        prefillTokens: scheduledTokens - stepWork.decodeSequences,
        decodeSequences: stepWork.decodeSequences,
        runningSequences: this.running.length,
        waitingSequences: this.waiting.length,
      });
      await this.publishEvents();
      await this.publishLoadMetrics();
    }
  }

  /** Decides this step's work and allocates its blocks. */
  private schedule(): ScheduledChunk[] {
    const { blockSize, maxNumSeqs, maxNumBatchedTokens, enableChunkedPrefill } = this.options;
    const work: ScheduledChunk[] = [];
    let budget = maxNumBatchedTokens;
    let preempted = false;

    for (let i = 0; i < this.running.length && budget > 0; ) {
      const sequence = this.running[i] as MockerSequence;
      const pending = sequence.pendingTokens;
      const tokens = Math.min(pending, budget);
      if (!enableChunkedPrefill && tokens < pending) break;
      const needed = Math.ceil((sequence.numComputed + tokens) / blockSize) - sequence.blocks.length;
      let fresh = needed > 0 ? this.pool.allocate(needed) : [];
      while (fresh === null) {
        const victim = this.running.at(-1) as MockerSequence;
        if (victim === sequence && this.running.length === 1) {
          // Alone and still out of room: the whole cache cannot hold it.
          this.finish(sequence, "length");
          break;
        }
        this.preempt(victim);
        preempted = true;
        if (victim === sequence) break;
        fresh = this.pool.allocate(needed);
      }
      if (fresh === null) break;
      sequence.blocks.push(...fresh);
      work.push({ sequence, tokens });
      budget -= tokens;
      i++;
    }

    // As in vLLM, nothing new is admitted in a step that had to preempt.
    while (!preempted && budget > 0 && this.running.length < maxNumSeqs && this.waiting.length > 0) {
      const sequence = this.waiting[0] as MockerSequence;
      const hits = this.prefixHits(sequence);
      const cachedTokens = hits * blockSize;
      // Transferred KV counts as computed: only the blocks are allocated.
      const computed = Math.max(cachedTokens, sequence.importedTokens);
      const pending = sequence.tokens.length - computed;
      if (!enableChunkedPrefill && pending > budget) break;
      const tokens = Math.min(pending, budget);
      const hitHashes = sequence.blockHashes.slice(0, hits).map((block) => block.blockHash);
      const needed = Math.ceil((computed + tokens) / blockSize) - hits;
      if (!this.pool.canAcquire(hitHashes, needed)) break;
      const cached = this.pool.acquireCached(hitHashes);
      const fresh = this.pool.allocate(needed) as KvBlock[];
      this.waiting.shift();
      sequence.blocks = [...cached, ...fresh];
      sequence.numComputed = computed;
      sequence.numCommittedBlocks = hits;
      sequence.cachedTokens ??= cachedTokens;
      sequence.state = "running";
      this.running.push(sequence);
      work.push({ sequence, tokens });
      budget -= tokens;
    }
    return work;
  }

  /** Leading full blocks of the sequence found in the prefix cache, leaving at least one token to compute. */
  private prefixHits(sequence: MockerSequence): number {
    if (!this.options.enablePrefixCaching) return 0;
    this.extendBlockHashes(sequence, Math.floor(sequence.tokens.length / this.options.blockSize));
    // The last token must be computed to sample from it, so a fully cached prompt still recomputes one block.
    const limit = Math.floor((sequence.tokens.length - 1) / this.options.blockSize);
    return this.pool.matchPrefix(
      sequence.blockHashes.map((block) => block.blockHash),
      limit,
    );
  }

  private extendBlockHashes(sequence: MockerSequence, count: number): void {
    const { blockSize } = this.options;
    const hashes = sequence.blockHashes;
    if (hashes.length === 0) {
      hashes.push(...computeBlockHashes(sequence.tokens.slice(0, count * blockSize), blockSize));
      return;
    }
    for (let b = hashes.length; b < count; b++) {
      const parent = (hashes[b - 1] as KvStoredBlock).blockHash;
      hashes.push(chainBlockHash(parent, sequence.tokens.slice(b * blockSize, (b + 1) * blockSize)));
    }
  }

  private preempt(sequence: MockerSequence): void {
    const index = this.running.indexOf(sequence);
    if (index >= 0) this.running.splice(index, 1);
    this.pool.release(sequence.blocks);
    sequence.blocks = [];
    sequence.numComputed = 0;
    sequence.numCommittedBlocks = 0;
    // The transferred KV is gone with the blocks: recomputed here on readmission.
    sequence.importedTokens = 0;
    sequence.state = "waiting";
    this.waiting.unshift(sequence);
    this.preemptions++;
  }

  /** Applies a step once its time has passed. */
  private apply(work: ScheduledChunk[]): void {
    const { blockSize, enablePrefixCaching } = this.options;
    for (const { sequence, tokens } of work) {
      // Stopped, killed or preempted while the step ran.
      if (sequence.state !== "running") continue;
      sequence.numComputed += tokens;
      const full = Math.floor(sequence.numComputed / blockSize);
      if (enablePrefixCaching && full > sequence.numCommittedBlocks) {
        this.extendBlockHashes(sequence, full);
        const from = sequence.numCommittedBlocks;
        const parent = from === 0 ? null : (sequence.blockHashes[from - 1]?.blockHash ?? null);
        const entries: { block: KvBlock; hashes: KvStoredBlock }[] = [];
        for (let b = from; b < full; b++) {
          entries.push({ block: sequence.blocks[b] as KvBlock, hashes: sequence.blockHashes[b] as KvStoredBlock });
        }
        this.pool.commit(parent, entries);
      }
      sequence.numCommittedBlocks = Math.max(sequence.numCommittedBlocks, full);
      if (sequence.pendingTokens === 0) this.sample(sequence);
    }
  }

  private sample(sequence: MockerSequence): void {
    const token = sequence.sampler.next();
    sequence.tokens.push(token);
    sequence.generated++;
    let finishReason: FinishReason | undefined;
    if (sequence.stopTokenIds.has(token) && sequence.generated >= sequence.minTokens) finishReason = "stop";
    else if (sequence.generated >= sequence.maxTokens) finishReason = "length";
    const message = this.withFirstOutputFields(sequence, { tokenIds: [token] });
    if (finishReason !== undefined) {
      message.finishReason = finishReason;
      this.remove(sequence);
    } else if (sequence.prefillOnly) {
      // Prefill done: the sequence leaves the batch, its blocks kept for the transfer (see handOff).
      sequence.handoffBlocks = sequence.blocks;
      sequence.blocks = [];
      this.remove(sequence);
    }
    sequence.outputs.push(message);
  }

  /** Adds `cachedTokens` (and a decode phase's `kvImport`) when `message` is the sequence's first. */
  private withFirstOutputFields(sequence: MockerSequence, message: EngineOutput): EngineOutput {
    if (sequence.firstOutputSent) return message;
    sequence.firstOutputSent = true;
    message.cachedTokens = sequence.cachedTokens ?? 0;
    if (sequence.kvImport !== undefined) message.kvImport = sequence.kvImport;
    return message;
  }

  /** Ends a sequence early with a final empty message (graceful stop, or out of room). */
  private finish(sequence: MockerSequence, finishReason: FinishReason): void {
    if (sequence.state === "finished") return;
    this.remove(sequence);
    sequence.outputs.push(this.withFirstOutputFields(sequence, { tokenIds: [], finishReason }));
  }

  /** Takes a sequence out of the engine and frees its blocks; idempotent. */
  private remove(sequence: MockerSequence): void {
    if (sequence.state === "finished") return;
    const queue = sequence.state === "running" ? this.running : this.waiting;
    const index = queue.indexOf(sequence);
    if (index >= 0) queue.splice(index, 1);
    this.pool.release(sequence.blocks);
    sequence.blocks = [];
    sequence.state = "finished";
    // An idle loop republishes load metrics (a kill frees blocks outside any step).
    this.wake();
  }

  private loadMetrics(): WorkerLoadMetrics {
    let prefillTokensQueued = 0;
    // Only tokens still to compute: a waiting prompt's prefix that the cache holds will be skipped at admission.
    const blockSize = this.options.blockSize;
    for (const sequence of this.waiting)
      prefillTokensQueued +=
        sequence.tokens.length - Math.max(this.prefixHits(sequence) * blockSize, sequence.importedTokens);
    for (const sequence of this.running) if (!sequence.isDecoding) prefillTokensQueued += sequence.pendingTokens;
    const activeKvBlocks = this.pool.activeBlocks;
    return {
      workerId: this.options.workerId,
      activeSequences: this.running.length,
      waitingSequences: this.waiting.length,
      activeKvBlocks,
      totalKvBlocks: this.options.totalKvBlocks,
      kvUsage: activeKvBlocks / this.options.totalKvBlocks,
      prefillTokensQueued,
    };
  }

  /**
   * Re-sends this engine's KV cache as `cleared` then `stored` events (a
   * router saw a gap in its event ids). Numbered after every event
   * published so far.
   */
  async resyncKvEvents(): Promise<void> {
    await this.kvEvents?.publish(this.pool.resyncEvents());
  }

  private async publishEvents(): Promise<void> {
    const events = this.pool.takeEvents();
    await this.kvEvents?.publish(events);
  }

  private async publishLoadMetrics(): Promise<void> {
    const { eventPublisher, loadMetricsSubject, workerId, logger } = this.options;
    if (eventPublisher === undefined) return;
    const metrics = this.loadMetrics();
    const key = JSON.stringify(metrics);
    if (key === this.lastMetricsKey) return;
    this.lastMetricsKey = key;
    try {
      await eventPublisher.publish(loadMetricsSubject, metrics);
    } catch (err) {
      logger.warn({ err, workerId }, "publishing load metrics failed");
    }
  }
}
