import {
  computeBlockHashes,
  type EngineOutput,
  KV_EVENTS_TOPIC,
  type KvCacheEvent,
  LOAD_METRICS_TOPIC,
  type PreprocessedRequest,
  type WorkerLoadMetrics,
} from "@tdist/llm";
import { Context, TdistError, withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { VirtualClock } from "./mocker-clock.js";
import { MockerEngine } from "./mocker-engine.js";
import type { MockerEngineOptions, MockerEventPublisher, MockerStepInfo } from "./mocker-options.js";
import { DEFAULT_TIMING_MODEL, stepDurationMs } from "./timing-model.js";

const BOUND_MS = 10_000;

class RecordingPublisher implements MockerEventPublisher {
  readonly messages: { subject: string; payload: unknown }[] = [];

  async publish(subject: string, payload: unknown): Promise<void> {
    this.messages.push({ subject, payload: structuredClone(payload) });
  }

  get kvEvents(): KvCacheEvent[] {
    return this.messages.filter((m) => m.subject === KV_EVENTS_TOPIC).map((m) => m.payload as KvCacheEvent);
  }

  get loadMetrics(): WorkerLoadMetrics[] {
    return this.messages.filter((m) => m.subject === LOAD_METRICS_TOPIC).map((m) => m.payload as WorkerLoadMetrics);
  }
}

function request(
  tokenIds: number[],
  maxTokens: number,
  extra: {
    seed?: number;
    temperature?: number;
    logitBias?: Record<string, number>;
    stop?: Partial<PreprocessedRequest["stop"]>;
    eos?: number[];
  } = {},
): PreprocessedRequest {
  return {
    model: "mock",
    tokenIds,
    sampling: {
      ...(extra.seed !== undefined ? { seed: extra.seed } : {}),
      ...(extra.temperature !== undefined ? { temperature: extra.temperature } : {}),
      ...(extra.logitBias !== undefined ? { logitBias: extra.logitBias } : {}),
    },
    stop: { maxTokens, ...extra.stop },
    eosTokenIds: extra.eos ?? [],
    output: {},
  };
}

/** A prompt of `length` tokens unique to `tag`. */
const prompt = (tag: number, length: number): number[] => Array.from({ length }, (_, i) => tag * 1000 + i);

function engineWith(options: MockerEngineOptions = {}): { engine: MockerEngine; publisher: RecordingPublisher } {
  const publisher = new RecordingPublisher();
  const engine = new MockerEngine({ clock: new VirtualClock(), workerId: "w1", eventPublisher: publisher, ...options });
  return { engine, publisher };
}

async function run(engine: MockerEngine, req: PreprocessedRequest, ctx = new Context()): Promise<EngineOutput[]> {
  return withTimeout("generate", BOUND_MS, undefined, async () => {
    const out: EngineOutput[] = [];
    for await (const message of engine.generate(req, ctx)) out.push(message);
    return out;
  });
}

/** Waits (bounded) until the engine's step loop has gone idle and published its final state. */
async function idle(engine: MockerEngine, publisher: RecordingPublisher): Promise<void> {
  await withTimeout("idle", BOUND_MS, undefined, async () => {
    while (engine.stats().steps === 0 || publisher.loadMetrics.at(-1)?.activeSequences !== 0) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    // One more turn so that the idle branch has published.
    await new Promise((resolve) => setImmediate(resolve));
  });
}

const tokensOf = (messages: EngineOutput[]): number[] => messages.flatMap((m) => m.tokenIds);
const storedHashes = (events: KvCacheEvent[]): string[] =>
  events.flatMap((e) => (e.data.type === "stored" ? e.data.blocks.map((b) => b.blockHash) : []));

describe("mocker engine", () => {
  it("mocker engine - generates maxTokens tokens, one per message, ending with length", async () => {
    const { engine } = engineWith();
    const out = await run(engine, request(prompt(1, 20), 5));
    expect(out).toHaveLength(5);
    expect(out.every((m) => m.tokenIds.length === 1)).toBe(true);
    expect(out.at(-1)?.finishReason).toBe("length");
    expect(out[0]?.cachedTokens).toBe(0);
    expect(tokensOf(out).every((t) => Number.isInteger(t) && t >= 0 && t < 32000)).toBe(true);
    await engine.close();
  });

  it("mocker engine - prefix cache hit on a repeated prompt stores nothing new", async () => {
    const { engine, publisher } = engineWith({ blockSize: 4 });
    const tokens = prompt(2, 10);
    const first = await run(engine, request(tokens, 6, { temperature: 0 }));
    expect(first[0]?.cachedTokens).toBe(0);
    await idle(engine, publisher);
    const storedAfterFirst = storedHashes(publisher.kvEvents);
    // Prompt blocks 0 and 1, plus block 2 filled by decode (10 prompt + 5 computed output tokens).
    expect(storedAfterFirst).toHaveLength(3);
    expect(storedAfterFirst.slice(0, 2)).toEqual(computeBlockHashes(tokens, 4).map((b) => b.blockHash));
    const firstEvent = publisher.kvEvents[0];
    expect(firstEvent?.data).toMatchObject({ type: "stored", parentHash: null });

    const eventsBefore = publisher.kvEvents.length;
    const second = await run(engine, request(tokens, 6, { temperature: 0 }));
    expect(second[0]?.cachedTokens).toBe(Math.floor(tokens.length / 4) * 4);
    // Same prompt, greedy: the same output, so even the decode block is already cached.
    expect(tokensOf(second)).toEqual(tokensOf(first));
    await idle(engine, publisher);
    expect(publisher.kvEvents.slice(eventsBefore).filter((e) => e.data.type === "stored")).toEqual([]);
    await engine.close();
  });

  it("mocker engine - a fully cached prompt still recomputes its last block", async () => {
    const { engine } = engineWith({ blockSize: 4 });
    const tokens = prompt(3, 8);
    await run(engine, request(tokens, 1));
    const again = await run(engine, request(tokens, 1));
    expect(again[0]?.cachedTokens).toBe(4);
    await engine.close();
  });

  it("mocker engine - LRU eviction under pressure publishes removed events", async () => {
    // 6 blocks of 4 tokens; 9-token prompts take 3 blocks (2 full + a partial tail).
    const { engine, publisher } = engineWith({ blockSize: 4, totalKvBlocks: 6 });
    const [a, b, c] = [prompt(1, 9), prompt(2, 9), prompt(3, 9)];
    const ha = computeBlockHashes(a, 4).map((x) => x.blockHash);
    const hb = computeBlockHashes(b, 4).map((x) => x.blockHash);
    await run(engine, request(a, 1));
    await run(engine, request(b, 1));
    // A again: a full prefix hit, which makes A's blocks the most recently used.
    expect((await run(engine, request(a, 1)))[0]?.cachedTokens).toBe(8);
    await run(engine, request(c, 1));
    await idle(engine, publisher);
    const removed = publisher.kvEvents.filter((e) => e.data.type === "removed");
    // C needed 3 blocks with 2 never-used ones left: B's tail block went first.
    expect(removed.map((e) => e.data)).toEqual([{ type: "removed", blockHashes: [hb[1]] }]);
    // B again: only B's first block is left; recomputing the rest evicts the next least recent, A's tail.
    expect((await run(engine, request(b, 1)))[0]?.cachedTokens).toBe(4);
    expect((await run(engine, request(a, 1)))[0]?.cachedTokens).toBe(4);
    await idle(engine, publisher);
    const removedSoFar = publisher.kvEvents.filter((e) => e.data.type === "removed").map((e) => e.data);
    expect(removedSoFar.slice(0, 2)).toEqual([
      { type: "removed", blockHashes: [hb[1]] },
      { type: "removed", blockHashes: [ha[1]] },
    ]);

    const events = publisher.kvEvents;
    expect(events.map((e) => e.eventId)).toEqual(events.map((_, i) => i));
    expect(new Set(events.map((e) => e.workerId))).toEqual(new Set(["w1"]));
    // Every removed hash had been stored before.
    const stored = new Set(storedHashes(events));
    for (const e of removed)
      if (e.data.type === "removed") for (const h of e.data.blockHashes) expect(stored.has(h)).toBe(true);
    await engine.close();
  });

  it("mocker engine - many concurrent requests all complete", async () => {
    const { engine, publisher } = engineWith();
    const outputs = await Promise.all(Array.from({ length: 40 }, (_, i) => run(engine, request(prompt(i, 30 + i), 8))));
    for (const out of outputs) {
      expect(tokensOf(out)).toHaveLength(8);
      expect(out.at(-1)?.finishReason).toBe("length");
    }
    await idle(engine, publisher);
    expect(engine.stats()).toMatchObject({ activeSequences: 0, waitingSequences: 0, activeKvBlocks: 0 });
    expect(engine.stats().peakRunningSequences).toBeGreaterThan(1);
    await engine.close();
  });

  it("mocker engine - maxNumSeqs caps the running batch", async () => {
    const steps: MockerStepInfo[] = [];
    const { engine, publisher } = engineWith({ maxNumSeqs: 2, onStep: (s) => steps.push(s) });
    const outputs = await Promise.all(Array.from({ length: 6 }, (_, i) => run(engine, request(prompt(i, 20), 4))));
    expect(outputs.every((out) => tokensOf(out).length === 4)).toBe(true);
    expect(engine.stats().peakRunningSequences).toBe(2);
    expect(Math.max(...steps.map((s) => s.runningSequences))).toBeLessThanOrEqual(2);
    expect(steps.some((s) => s.waitingSequences > 0)).toBe(true);
    expect(Math.max(...publisher.loadMetrics.map((m) => m.activeSequences))).toBe(2);
    await engine.close();
  });

  it("mocker engine - chunked prefill respects the token budget", async () => {
    const steps: MockerStepInfo[] = [];
    const { engine } = engineWith({ maxNumBatchedTokens: 32, maxNumSeqs: 4, onStep: (s) => steps.push(s) });
    const out = await run(engine, request(prompt(7, 100), 3));
    expect(tokensOf(out)).toHaveLength(3);
    expect(steps.every((s) => s.scheduledTokens <= 32)).toBe(true);
    // 100 prompt tokens in chunks of 32, then two decode steps.
    expect(steps.map((s) => s.prefillTokens)).toEqual([32, 32, 32, 4, 0, 0]);
    await engine.close();
  });

  it("mocker engine - chunked prefill shares the budget with decoding sequences", async () => {
    const steps: MockerStepInfo[] = [];
    const { engine } = engineWith({ maxNumBatchedTokens: 32, maxNumSeqs: 4, onStep: (s) => steps.push(s) });
    await Promise.all([run(engine, request(prompt(1, 10), 20)), run(engine, request(prompt(2, 200), 2))]);
    expect(steps.every((s) => s.scheduledTokens <= 32)).toBe(true);
    expect(steps.some((s) => s.decodeSequences === 1 && s.prefillTokens === 31)).toBe(true);
    await engine.close();
  });

  it("mocker engine - without chunked prefill a prompt over the budget is refused", async () => {
    const { engine } = engineWith({ maxNumBatchedTokens: 32, maxNumSeqs: 4, enableChunkedPrefill: false });
    const error = await run(engine, request(prompt(1, 33), 1)).catch((err: unknown) => err);
    expect(TdistError.is(error, "bad_request")).toBe(true);
    expect(tokensOf(await run(engine, request(prompt(1, 32), 2)))).toHaveLength(2);
    await engine.close();
  });

  it("mocker engine - step time follows the timing model and scales with speedupRatio", async () => {
    const measure = async (speedupRatio: number): Promise<{ elapsed: number; steps: MockerStepInfo[] }> => {
      const clock = new VirtualClock(1_000);
      const steps: MockerStepInfo[] = [];
      const engine = new MockerEngine({ clock, speedupRatio, onStep: (s) => steps.push(s) });
      const started = clock.now();
      await Promise.all([run(engine, request(prompt(1, 500), 10)), run(engine, request(prompt(2, 300), 10))]);
      const elapsed = clock.now() - started;
      await engine.close();
      return { elapsed, steps };
    };
    const slow = await measure(1);
    const fast = await measure(10);
    expect(slow.elapsed / fast.elapsed).toBeCloseTo(10, 6);
    expect(slow.steps).toHaveLength(fast.steps.length);
    // First step: both prompts prefilled, nothing cached.
    const firstStep = stepDurationMs(DEFAULT_TIMING_MODEL, {
      prefillChunks: [
        { newTokens: 500, contextEnd: 500 },
        { newTokens: 300, contextEnd: 300 },
      ],
      decodeSequences: 0,
      decodeKvBlocks: 0,
    });
    expect(slow.steps[0]?.durationMs).toBeCloseTo(firstStep, 9);
    expect(fast.steps[0]?.durationMs).toBeCloseTo(firstStep / 10, 9);
    // Decode steps cost less than the prefill step and grow with the KV held.
    expect(slow.steps[1]?.durationMs).toBeLessThan(firstStep);
    expect(slow.elapsed).toBeCloseTo(
      slow.steps.reduce((sum, s) => sum + s.durationMs, 0),
      6,
    );
  });

  it("mocker engine - a prefix hit makes the prefill step cheaper", async () => {
    const steps: MockerStepInfo[] = [];
    const { engine } = engineWith({ onStep: (s) => steps.push(s) });
    const tokens = prompt(5, 1000);
    await run(engine, request(tokens, 1));
    const cold = steps.at(-1)?.durationMs ?? 0;
    await run(engine, request(tokens, 1));
    const warm = steps.at(-1)?.durationMs ?? 0;
    expect(warm).toBeLessThan(cold / 5);
    await engine.close();
  });

  it("mocker engine - kill frees the sequence's blocks at once", async () => {
    const { engine } = engineWith({ blockSize: 4 });
    const ctx = new Context();
    const stream = engine.generate(request(prompt(1, 40), 1_000), ctx);
    await withTimeout("first tokens", BOUND_MS, undefined, async () => {
      for (let i = 0; i < 3; i++) await stream.next();
    });
    expect(engine.stats().activeKvBlocks).toBeGreaterThanOrEqual(10);
    ctx.kill();
    const end = await withTimeout("return", BOUND_MS, undefined, () => stream.return(undefined));
    expect(end.done).toBe(true);
    expect(engine.stats()).toMatchObject({ activeKvBlocks: 0, activeSequences: 0, waitingSequences: 0 });
    await engine.close();
  });

  it("mocker engine - breaking out of for-await frees blocks", async () => {
    const { engine } = engineWith();
    await withTimeout("generate", BOUND_MS, undefined, async () => {
      let n = 0;
      for await (const _ of engine.generate(request(prompt(1, 64), 1_000), new Context())) {
        if (++n === 2) break;
      }
    });
    expect(engine.stats().activeKvBlocks).toBe(0);
    await engine.close();
  });

  it("mocker engine - graceful stop ends with cancelled and frees blocks", async () => {
    const { engine } = engineWith();
    const ctx = new Context();
    const out: EngineOutput[] = [];
    await withTimeout("generate", BOUND_MS, undefined, async () => {
      for await (const message of engine.generate(request(prompt(1, 64), 1_000), ctx)) {
        out.push(message);
        if (out.length === 3) ctx.stopGenerating();
      }
    });
    expect(out.at(-1)).toEqual({ tokenIds: [], finishReason: "cancelled" });
    expect(tokensOf(out).length).toBeLessThan(1_000);
    expect(engine.stats().activeKvBlocks).toBe(0);
    await engine.close();
  });

  it("mocker engine - a kill while waiting removes the request from the queue", async () => {
    const { engine } = engineWith({ maxNumSeqs: 1 });
    const runningCtx = new Context();
    const running = engine.generate(request(prompt(1, 16), 1_000), runningCtx);
    await withTimeout("first", BOUND_MS, undefined, () => running.next());
    const waitingCtx = new Context();
    const waiting = engine.generate(request(prompt(2, 16), 5), waitingCtx);
    const pending = waiting.next();
    await withTimeout("queued", BOUND_MS, undefined, async () => {
      while (engine.stats().waitingSequences === 0) await new Promise((resolve) => setImmediate(resolve));
    });
    waitingCtx.kill();
    expect((await withTimeout("killed", BOUND_MS, undefined, () => pending)).done).toBe(true);
    expect(engine.stats().waitingSequences).toBe(0);
    runningCtx.kill();
    await withTimeout("return", BOUND_MS, undefined, () => running.return(undefined));
    expect(engine.stats().activeKvBlocks).toBe(0);
    await engine.close();
  });

  it("mocker engine - the same seed gives the same output", async () => {
    const { engine } = engineWith();
    const a = tokensOf(await run(engine, request(prompt(1, 20), 16, { seed: 42 })));
    const b = tokensOf(await run(engine, request(prompt(2, 33), 16, { seed: 42 })));
    const c = tokensOf(await run(engine, request(prompt(1, 20), 16, { seed: 43 })));
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
    const other = engineWith().engine;
    expect(tokensOf(await run(other, request(prompt(1, 20), 16, { seed: 42 })))).toEqual(a);
    await engine.close();
    await other.close();
  });

  it("mocker engine - unseeded sampling draws a fresh seed per request; greedy stays deterministic", async () => {
    const { engine } = engineWith();
    const tokens = prompt(4, 12);
    // 32 tokens from a 32000-id vocabulary: two equal outputs would be a collision of 2^-478.
    const sampled = await Promise.all(
      Array.from({ length: 4 }, async () => tokensOf(await run(engine, request(tokens, 32, { temperature: 1 })))),
    );
    expect(new Set(sampled.map((t) => t.join(","))).size).toBe(4);
    // No temperature is OpenAI's default of 1: sampled too.
    const defaults = [await run(engine, request(tokens, 32)), await run(engine, request(tokens, 32))];
    expect(tokensOf(defaults[1] as EngineOutput[])).not.toEqual(tokensOf(defaults[0] as EngineOutput[]));
    const greedy = tokensOf(await run(engine, request(tokens, 32, { temperature: 0 })));
    expect(tokensOf(await run(engine, request(tokens, 32, { temperature: 0 })))).toEqual(greedy);
    const seeded = tokensOf(await run(engine, request(tokens, 32, { temperature: 1, seed: 9 })));
    expect(tokensOf(await run(engine, request(tokens, 32, { temperature: 1, seed: 9 })))).toEqual(seeded);
    await engine.close();
  });

  it("mocker engine - a greedy continuation (prompt plus the tokens so far) goes on exactly as the undisturbed run", async () => {
    const { engine } = engineWith();
    const tokens = prompt(5, 12);
    const whole = tokensOf(await run(engine, request(tokens, 40, { temperature: 0 })));
    for (const cut of [1, 17, 39]) {
      const continued = await run(engine, request([...tokens, ...whole.slice(0, cut)], 40 - cut, { temperature: 0 }));
      expect([...whole.slice(0, cut), ...tokensOf(continued)]).toEqual(whole);
    }
    await engine.close();
  });

  it("mocker engine - logit bias: -100 bans a token, 100 forces it, in between shifts the odds", async () => {
    const { engine } = engineWith({ vocabSize: 50 });
    const tokens = prompt(5, 8);
    const greedy = tokensOf(await run(engine, request(tokens, 40, { temperature: 0 })));
    const first = greedy[0] as number;
    const banned = tokensOf(
      await run(engine, request(tokens, 40, { temperature: 0, logitBias: { [String(first)]: -100 } })),
    );
    expect(banned).not.toEqual(greedy);
    expect(banned).not.toContain(first);

    const forcedId = (first + 1) % 50;
    const forced = tokensOf(
      await run(engine, request(tokens, 20, { temperature: 0, logitBias: { [String(forcedId)]: 100 } })),
    );
    expect(forced).toEqual(Array(20).fill(forcedId));
    // Two tokens at 100 share the draws.
    const pair = tokensOf(await run(engine, request(tokens, 40, { seed: 3, logitBias: { "7": 100, "8": 100 } })));
    expect(new Set(pair)).toEqual(new Set([7, 8]));

    // A bias of ln(49) gives its token the weight of the 49 other ids together: about half the draws.
    const shifted = tokensOf(await run(engine, request(tokens, 400, { seed: 11, logitBias: { "5": Math.log(49) } })));
    const share = shifted.filter((t) => t === 5).length / shifted.length;
    expect(share).toBeGreaterThan(0.35);
    expect(share).toBeLessThan(0.65);
    await engine.close();
  });

  it("mocker engine - a logit bias outside the vocabulary or the range is a bad_request", async () => {
    const { engine } = engineWith({ vocabSize: 50 });
    const invalid: Record<string, number>[] = [{ "50": 1 }, { "-1": 1 }, { x: 1 }, { "3": 101 }, { "3": Number.NaN }];
    for (const logitBias of invalid) {
      const err = await run(engine, request(prompt(1, 4), 2, { logitBias })).catch((e: unknown) => e);
      expect(TdistError.is(err, "bad_request")).toBe(true);
    }
    const everything = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [String(i), -100]));
    const err = await run(engine, request(prompt(1, 4), 2, { logitBias: everything })).catch((e: unknown) => e);
    expect(TdistError.is(err, "bad_request")).toBe(true);
    await engine.close();
  });

  it("mocker engine - preemption under KV pressure keeps outputs correct", async () => {
    const alone = engineWith({ blockSize: 4 }).engine;
    const requests = Array.from({ length: 4 }, (_, i) => request(prompt(i, 8), 30, { seed: i }));
    const expected = [];
    for (const req of requests) expected.push(tokensOf(await run(alone, req)));
    // 4 sequences growing to 38 tokens (10 blocks each) cannot all fit in 16 blocks.
    const { engine, publisher } = engineWith({ blockSize: 4, totalKvBlocks: 16 });
    const outputs = await Promise.all(requests.map((req) => run(engine, req)));
    expect(outputs.map(tokensOf)).toEqual(expected);
    expect(engine.stats().preemptions).toBeGreaterThan(0);
    await idle(engine, publisher);
    expect(engine.stats().activeKvBlocks).toBe(0);
    await alone.close();
    await engine.close();
  });

  it("mocker engine - a sequence that outgrows the whole cache ends with length", async () => {
    const { engine } = engineWith({ blockSize: 4, totalKvBlocks: 4 });
    const out = await run(engine, request(prompt(1, 10), 100));
    expect(out.at(-1)?.finishReason).toBe("length");
    expect(tokensOf(out).length).toBe(16 - 10 + 1);
    await engine.close();
  });

  it("mocker engine - stop ids end with stop after minTokens, eos is never sampled", async () => {
    const { engine } = engineWith({ vocabSize: 3 });
    const out = await run(
      engine,
      request(prompt(1, 5), 200, { seed: 1, eos: [0], stop: { stopTokenIds: [2], minTokens: 4 } }),
    );
    const tokens = tokensOf(out);
    expect(out.at(-1)?.finishReason).toBe("stop");
    expect(tokens.at(-1)).toBe(2);
    expect(tokens.length).toBeGreaterThanOrEqual(4);
    expect(tokens.slice(0, -1).filter((t, i) => t === 2 && i >= 3)).toEqual([]);
    expect(tokens).not.toContain(0);
    await engine.close();
  });

  it("mocker engine - publishes load metrics with its worker id", async () => {
    const { engine, publisher } = engineWith({ totalKvBlocks: 100 });
    await run(engine, request(prompt(1, 64), 4));
    await idle(engine, publisher);
    const metrics = publisher.loadMetrics;
    expect(metrics.length).toBeGreaterThan(1);
    expect(metrics.some((m) => m.activeSequences === 1 && m.activeKvBlocks > 0)).toBe(true);
    expect(metrics.at(-1)).toEqual({
      workerId: "w1",
      activeSequences: 0,
      waitingSequences: 0,
      activeKvBlocks: 0,
      totalKvBlocks: 100,
      kvUsage: 0,
      prefillTokensQueued: 0,
    });
    await engine.close();
  });

  it("mocker engine - queued prefill tokens leave out the prefix the cache will skip", async () => {
    const { engine, publisher } = engineWith({ blockSize: 16, maxNumSeqs: 1 });
    await run(engine, request(prompt(1, 64), 2));
    // One sequence at a time: the second request waits while the first decodes.
    await Promise.all([
      run(engine, request(prompt(2, 16), 20)),
      run(engine, request([...prompt(1, 64), ...prompt(3, 16)], 2)),
    ]);
    const waiting = publisher.loadMetrics.filter((m) => m.waitingSequences === 1);
    expect(waiting.length).toBeGreaterThan(0);
    // 80 prompt tokens, 64 of them cached: 16 still to prefill.
    for (const m of waiting) expect(m.prefillTokensQueued).toBe(16);
    await engine.close();
  });

  it("mocker engine - uses the configured subjects", async () => {
    const { engine, publisher } = engineWith({
      kvEventsSubject: "tdist.ns.t.backend.kv-events",
      loadMetricsSubject: "m",
    });
    await run(engine, request(prompt(1, 40), 2));
    await withTimeout("metrics", BOUND_MS, undefined, async () => {
      while (!publisher.messages.some((m) => m.subject === "m")) await new Promise((resolve) => setImmediate(resolve));
    });
    expect(new Set(publisher.messages.map((m) => m.subject))).toEqual(new Set(["tdist.ns.t.backend.kv-events", "m"]));
    await engine.close();
  });

  it("mocker engine - runs on the system clock with a speed-up", async () => {
    const engine = new MockerEngine({ speedupRatio: 100 });
    const started = performance.now();
    const out = await run(engine, request(prompt(1, 100), 20));
    expect(tokensOf(out)).toHaveLength(20);
    // 20 steps of >= 5 ms each at 100x: at least ~1 ms of real time, far less than real-time 100 ms.
    expect(performance.now() - started).toBeLessThan(BOUND_MS);
    await engine.close();
  });

  it("mocker engine - close fails pending requests with shutting_down", async () => {
    const { engine } = engineWith();
    const stream = engine.generate(request(prompt(1, 16), 10_000), new Context());
    await withTimeout("first", BOUND_MS, undefined, () => stream.next());
    const closing = engine.close();
    const error = await withTimeout("drain", BOUND_MS, undefined, async () => {
      try {
        for (;;) if ((await stream.next()).done) return undefined;
      } catch (err) {
        return err;
      }
    });
    expect(TdistError.is(error, "shutting_down")).toBe(true);
    await withTimeout("close", BOUND_MS, undefined, () => closing);
    expect(engine.state).toBe("closed");
    const refused = await run(engine, request(prompt(1, 4), 1)).catch((err: unknown) => err);
    expect(TdistError.is(refused, "shutting_down")).toBe(true);
  });

  it("mocker engine - rejects invalid options and requests", async () => {
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (err) {
        return TdistError.is(err) ? err.code : "other";
      }
      return undefined;
    };
    expect(code(() => new MockerEngine({ blockSize: 0 }))).toBe("invalid_option");
    expect(code(() => new MockerEngine({ speedupRatio: 0 }))).toBe("invalid_option");
    expect(code(() => new MockerEngine({ maxNumSeqs: 10, maxNumBatchedTokens: 5 }))).toBe("invalid_option");
    expect(code(() => new MockerEngine({ timing: { stepOverheadMs: -1 } }))).toBe("invalid_option");
    const { engine } = engineWith({ blockSize: 4, totalKvBlocks: 2 });
    for (const bad of [request([], 1), request(prompt(1, 8), 1), request([1, -1], 1), request([1], -1)]) {
      const error = await run(engine, bad).catch((err: unknown) => err);
      expect(TdistError.is(error, "bad_request")).toBe(true);
    }
    expect(await run(engine, request([1, 2], 0))).toEqual([{ tokenIds: [], finishReason: "length", cachedTokens: 0 }]);
    await engine.close();
  });
});
