import type { EngineOutput, PreprocessedRequest } from "@tdist/llm";
import { Context, DistributedRuntime, type KvTransferHandle, TdistError, withTimeout } from "@tdist/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { kvTransferMs } from "./kv-transfer-model.js";
import { VirtualClock } from "./mocker-clock.js";
import { MockerEngine } from "./mocker-engine.js";
import { encodeKvPayload, verifyKvPayload } from "./mocker-kv-payload.js";
import type { MockerEngineOptions, MockerStepInfo } from "./mocker-options.js";
import { DEFAULT_TIMING_MODEL, stepDurationMs } from "./timing-model.js";

const BOUND_MS = 10_000;

const prompt = (tag: number, length: number): number[] => Array.from({ length }, (_, i) => tag * 10_000 + i);

function request(
  tokenIds: number[],
  maxTokens: number,
  extra: Partial<Pick<PreprocessedRequest, "disaggregation" | "sampling">> & {
    stop?: Partial<PreprocessedRequest["stop"]>;
  } = {},
): PreprocessedRequest {
  return {
    model: "mock",
    tokenIds,
    sampling: extra.sampling ?? { temperature: 0 },
    stop: { maxTokens, ...extra.stop },
    eosTokenIds: [],
    output: {},
    ...(extra.disaggregation !== undefined ? { disaggregation: extra.disaggregation } : {}),
  };
}

async function run(engine: MockerEngine, req: PreprocessedRequest): Promise<EngineOutput[]> {
  return withTimeout("generate", BOUND_MS, undefined, async () => {
    const out: EngineOutput[] = [];
    for await (const message of engine.generate(req, new Context())) out.push(message);
    return out;
  });
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const outcome = await withTimeout("expected error", BOUND_MS, undefined, () =>
    promise.then(
      () => "resolved",
      (err: unknown) => err,
    ),
  );
  expect(outcome).toBeInstanceOf(TdistError);
  expect((outcome as TdistError).code).toBe(code);
}

const tokensOf = (messages: EngineOutput[]): number[] => messages.flatMap((m) => m.tokenIds);

/** The decode request the frontend sends after a prefill answered `first` (see `DecodePhase`). */
function decodeRequest(
  tokens: number[],
  maxTokens: number,
  first: EngineOutput,
  sampling: PreprocessedRequest["sampling"] = { temperature: 0 },
): PreprocessedRequest {
  return request([...tokens, ...first.tokenIds], maxTokens - 1, {
    sampling,
    disaggregation: {
      phase: "decode",
      kvTransfer: first.kvTransfer as KvTransferHandle,
      kvTokens: tokens.length,
      prefillWorkerId: "prefill-0",
    },
  });
}

describe("mocker disaggregation", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function localRuntime(): Promise<DistributedRuntime> {
    const runtime = await DistributedRuntime.create({ env: {}, kvTransfer: { kind: "local" } });
    cleanups.push(() => runtime.shutdown());
    return runtime;
  }

  async function trio(options: MockerEngineOptions = {}): Promise<{
    runtime: DistributedRuntime;
    aggregated: MockerEngine;
    prefill: MockerEngine;
    decode: MockerEngine;
    /** The decode engine's steps. */
    decodeSteps: MockerStepInfo[];
  }> {
    const runtime = await localRuntime();
    const decodeSteps: MockerStepInfo[] = [];
    const make = (workerId: string, role: MockerEngineOptions["role"]): MockerEngine => {
      const engine = new MockerEngine({
        blockSize: 4,
        clock: new VirtualClock(),
        workerId,
        role,
        kvTransfer: runtime.kvTransfer,
        ...options,
        ...(role === "decode" ? { onStep: (step: MockerStepInfo) => decodeSteps.push(step) } : {}),
      });
      cleanups.push(() => engine.close());
      return engine;
    };
    return {
      runtime,
      aggregated: make("agg", "aggregated"),
      prefill: make("prefill", "prefill"),
      decode: make("decode", "decode"),
      decodeSteps,
    };
  }

  it("mocker disaggregation - prefill then decode gives the aggregated output, greedy and seeded, at several prompt lengths", async () => {
    const { runtime, aggregated, prefill, decode } = await trio();
    const cases: { tokens: number[]; sampling: PreprocessedRequest["sampling"] }[] = [
      { tokens: prompt(1, 3), sampling: { temperature: 0 } },
      { tokens: prompt(2, 17), sampling: { temperature: 0 } },
      { tokens: prompt(3, 200), sampling: { temperature: 0 } },
      { tokens: prompt(4, 64), sampling: { temperature: 0.8, seed: 7 } },
    ];
    for (const { tokens, sampling } of cases) {
      const expected = tokensOf(await run(aggregated, request(tokens, 12, { sampling })));
      const answer = await run(prefill, request(tokens, 12, { sampling, disaggregation: { phase: "prefill" } }));
      expect(answer).toHaveLength(1);
      const first = answer[0] as EngineOutput;
      expect(first.tokenIds).toEqual(expected.slice(0, 1));
      expect(first.finishReason).toBeUndefined();
      expect(first.kvTransfer?.byteCount).toBeGreaterThan(0);
      const rest = await run(decode, decodeRequest(tokens, 12, first, sampling));
      expect(rest[0]?.kvImport).toBe("fetched");
      expect(tokensOf(rest)).toEqual(expected.slice(1));
      expect(rest.at(-1)?.finishReason).toBe("length");
    }
    expect(runtime.kvTransfer.openOffers).toBe(0);
  });

  it("mocker disaggregation - concurrent disaggregated requests each continue their own prompt", async () => {
    const { aggregated, prefill, decode } = await trio();
    const prompts = [prompt(10, 40), prompt(11, 90), prompt(12, 41), prompt(13, 7)];
    const expected = await Promise.all(prompts.map(async (t) => tokensOf(await run(aggregated, request(t, 9)))));
    const firsts = await Promise.all(
      prompts.map(async (t) => (await run(prefill, request(t, 9, { disaggregation: { phase: "prefill" } })))[0]),
    );
    const rests = await Promise.all(
      prompts.map(async (t, i) => tokensOf(await run(decode, decodeRequest(t, 9, firsts[i] as EngineOutput)))),
    );
    for (let i = 0; i < prompts.length; i++) {
      expect([...(firsts[i]?.tokenIds ?? []), ...(rests[i] ?? [])]).toEqual(expected[i]);
    }
  });

  it("mocker disaggregation - the prefill answer waits prefill time plus the transfer time of the prompt", async () => {
    const clock = new VirtualClock();
    const steps: MockerStepInfo[] = [];
    const runtime = await localRuntime();
    const engine = new MockerEngine({
      clock,
      blockSize: 4,
      role: "prefill",
      kvTransfer: runtime.kvTransfer,
      kvTransferGbps: 2,
      kvBytesPerToken: 1_000_000,
      onStep: (step) => steps.push(step),
    });
    cleanups.push(() => engine.close());
    const tokens = prompt(5, 100);
    const answer = await run(engine, request(tokens, 5, { disaggregation: { phase: "prefill" } }));
    expect(answer[0]?.kvTransfer).toBeDefined();
    // One step computes the whole prompt (under the token budget); then 100 tokens x 1 MB at 2 GB/s = 50 ms.
    expect(steps).toHaveLength(1);
    const prefillMs = stepDurationMs(DEFAULT_TIMING_MODEL, {
      prefillChunks: [{ newTokens: 100, contextEnd: 100 }],
      decodeSequences: 0,
      decodeKvBlocks: 0,
    });
    expect(kvTransferMs(100, 1_000_000, 2)).toBe(50);
    expect(clock.now()).toBeCloseTo(prefillMs + 50, 6);
  });

  it("mocker disaggregation - activity counts the step loop's work, a prefill answer's transfer wait and a fetch", async () => {
    const runtime = await localRuntime();
    // A clock whose sleeps end only when the test says: each state can be looked at.
    const sleeps: (() => void)[] = [];
    const clock = { now: () => 0, sleep: () => new Promise<void>((resolve) => sleeps.push(resolve)) };
    const engine = new MockerEngine({ clock, blockSize: 4, role: "prefill", kvTransfer: runtime.kvTransfer });
    cleanups.push(async () => {
      for (const wake of sleeps.splice(0)) wake();
      await engine.close();
    });
    const answer = withTimeout("prefill", BOUND_MS, undefined, () =>
      run(engine, request(prompt(70, 20), 4, { disaggregation: { phase: "prefill" } })),
    );
    const until = async (check: () => boolean): Promise<void> =>
      withTimeout("activity", BOUND_MS, undefined, async () => {
        while (!check()) await new Promise((resolve) => setImmediate(resolve));
      });
    await until(() => sleeps.length === 1);
    expect(engine.activity()).toEqual({ sequences: 1, transferWaits: 0, kvTransfers: 0 });
    // The prefill step ends: the answer waits out its transfer time, the sequence out of the batch.
    sleeps.shift()?.();
    await until(() => engine.activity().transferWaits === 1);
    expect(engine.activity()).toEqual({ sequences: 0, transferWaits: 1, kvTransfers: 0 });
    await until(() => sleeps.length === 1);
    sleeps.shift()?.();
    const first = (await answer)[0] as EngineOutput;
    expect(engine.activity()).toEqual({ sequences: 0, transferWaits: 0, kvTransfers: 0 });
    const decode = new MockerEngine({ clock: new VirtualClock(), blockSize: 4, kvTransfer: runtime.kvTransfer });
    cleanups.push(() => decode.close());
    const rest = run(decode, decodeRequest(prompt(70, 20), 4, first));
    // generate() runs up to its first await at once: the fetch is counted before it yields.
    expect(decode.activity()).toEqual({ sequences: 0, transferWaits: 0, kvTransfers: 1 });
    expect((await rest)[0]?.kvImport).toBe("fetched");
    expect(decode.activity()).toEqual({ sequences: 0, transferWaits: 0, kvTransfers: 0 });
  });

  it("mocker disaggregation - the decode worker charges no prefill for the transferred prompt and caches its blocks", async () => {
    const { prefill, decode, decodeSteps: steps } = await trio();
    const tokens = prompt(6, 64);
    const first = (await run(prefill, request(tokens, 4, { disaggregation: { phase: "prefill" } })))[0] as EngineOutput;
    const rest = await run(decode, decodeRequest(tokens, 4, first));
    expect(tokensOf(rest)).toHaveLength(3);
    expect(steps.length).toBeGreaterThan(0);
    // Every step on the decode worker is a decode step of one sequence: the prompt came over the transfer.
    expect(steps.every((step) => step.prefillTokens === 0 && step.decodeSequences === 1)).toBe(true);
    // The transferred blocks are in its prefix cache: the same prompt aggregated now hits them.
    const again = await run(decode, request(tokens, 2));
    expect(again[0]?.cachedTokens).toBe(60);
  });

  it("mocker disaggregation - the prefill worker holds the prompt's blocks until the fetch, then keeps them cached", async () => {
    const { runtime, prefill, decode } = await trio({ totalKvBlocks: 64 });
    const tokens = prompt(7, 40);
    const first = (await run(prefill, request(tokens, 4, { disaggregation: { phase: "prefill" } })))[0] as EngineOutput;
    // The prompt's 10 blocks of 4, held for the transfer (the sampled token is computed on the decode worker).
    expect(prefill.stats().freeKvBlocks).toBe(64 - 10);
    expect(runtime.kvTransfer.openOffers).toBe(1);
    await run(decode, decodeRequest(tokens, 4, first));
    await withTimeout("blocks released", BOUND_MS, undefined, async () => {
      while (prefill.stats().freeKvBlocks !== 64) await new Promise((resolve) => setImmediate(resolve));
    });
    expect(prefill.stats().cachedKvBlocks).toBe(10);
    expect(runtime.kvTransfer.openOffers).toBe(0);
  });

  it("mocker disaggregation - a fetch that fails (offer already taken) makes the decode worker prefill locally", async () => {
    const { runtime, aggregated, prefill, decode, decodeSteps } = await trio();
    const tokens = prompt(8, 50);
    const expected = tokensOf(await run(aggregated, request(tokens, 6)));
    const first = (await run(prefill, request(tokens, 6, { disaggregation: { phase: "prefill" } })))[0] as EngineOutput;
    // Someone else fetches it first: the offer serves one fetch, the decode worker's finds nothing.
    for await (const _ of runtime.kvTransfer.fetch(first.kvTransfer as KvTransferHandle)) {
      // drained
    }
    const rest = await run(decode, decodeRequest(tokens, 6, first));
    expect(rest[0]?.kvImport).toBe("fallback");
    expect([...first.tokenIds, ...tokensOf(rest)]).toEqual(expected);
    // It computed the prompt (and the first token) itself.
    expect(decodeSteps[0]?.prefillTokens).toBe(51);
  });

  it("mocker disaggregation - a corrupt transfer (checksum mismatch) makes the decode worker prefill locally", async () => {
    const { aggregated, prefill, decode } = await trio();
    const tokens = prompt(9, 30);
    const expected = tokensOf(await run(aggregated, request(tokens, 5)));
    const first = (await run(prefill, request(tokens, 5, { disaggregation: { phase: "prefill" } })))[0] as EngineOutput;
    const handle = first.kvTransfer as KvTransferHandle;
    const corrupt = {
      ...first,
      kvTransfer: { ...handle, checksum: handle.checksum === "crc32:00000000" ? "crc32:00000001" : "crc32:00000000" },
    };
    const rest = await run(decode, decodeRequest(tokens, 5, corrupt));
    expect(rest[0]?.kvImport).toBe("fallback");
    expect([...first.tokenIds, ...tokensOf(rest)]).toEqual(expected);
  });

  it("mocker disaggregation - a transfer of another prompt's cache fails the payload check and is prefilled locally", async () => {
    const { aggregated, prefill, decode, decodeSteps } = await trio();
    const tokens = prompt(20, 30);
    const other = prompt(21, 30);
    const expected = tokensOf(await run(aggregated, request(tokens, 5)));
    const first = (await run(prefill, request(tokens, 5, { disaggregation: { phase: "prefill" } })))[0] as EngineOutput;
    const othersFirst = (
      await run(prefill, request(other, 5, { disaggregation: { phase: "prefill" } }))
    )[0] as EngineOutput;
    // The right first token, the wrong prompt's offer.
    const mixedUp = { ...first, kvTransfer: othersFirst.kvTransfer };
    const rest = await run(decode, decodeRequest(tokens, 5, mixedUp));
    expect(rest[0]?.kvImport).toBe("fallback");
    expect([...first.tokenIds, ...tokensOf(rest)]).toEqual(expected);
    expect(decodeSteps[0]?.prefillTokens).toBe(31);
  });

  it("mocker disaggregation - the payload check accepts exactly the offered prompt", () => {
    const tokens = prompt(30, 37);
    expect(() => verifyKvPayload(encodeKvPayload(tokens, 16), tokens)).not.toThrow();
    const fails = (bytes: Uint8Array, against: number[]): string | undefined => {
      try {
        verifyKvPayload(bytes, against);
        return undefined;
      } catch (err) {
        return (err as TdistError).code;
      }
    };
    expect(fails(encodeKvPayload(tokens, 16), tokens.slice(0, 36))).toBe("kv_transfer_checksum");
    expect(fails(encodeKvPayload(tokens, 16), [...tokens.slice(0, 36), 1])).toBe("kv_transfer_checksum");
    expect(fails(new TextEncoder().encode("not json"), tokens)).toBe("kv_transfer_checksum");
    expect(fails(new TextEncoder().encode("{}"), tokens)).toBe("kv_transfer_checksum");
  });

  it("mocker disaggregation - a first token that ends the request is answered with its finish reason and no transfer", async () => {
    const { runtime, prefill } = await trio();
    const one = await run(prefill, request(prompt(40, 20), 1, { disaggregation: { phase: "prefill" } }));
    expect(one).toHaveLength(1);
    expect(one[0]?.tokenIds).toHaveLength(1);
    expect(one[0]?.finishReason).toBe("length");
    expect(one[0]?.kvTransfer).toBeUndefined();
    // A stop token as the first token (forced by a logit bias).
    const stopped = await run(
      prefill,
      request(prompt(41, 20), 10, {
        sampling: { temperature: 0, logitBias: { "77": 100 } },
        stop: { stopTokenIds: [77] },
        disaggregation: { phase: "prefill" },
      }),
    );
    expect(stopped).toEqual([expect.objectContaining({ tokenIds: [77], finishReason: "stop" })]);
    expect(stopped[0]?.kvTransfer).toBeUndefined();
    expect(runtime.kvTransfer.openOffers).toBe(0);
    expect(prefill.stats().activeKvBlocks).toBe(0);
  });

  it("mocker disaggregation - a decode worker serves a request without disaggregation aggregated", async () => {
    const { aggregated, decode } = await trio();
    const tokens = prompt(50, 33);
    const out = await run(decode, request(tokens, 6));
    expect(out[0]?.kvImport).toBeUndefined();
    expect(tokensOf(out)).toEqual(tokensOf(await run(aggregated, request(tokens, 6))));
  });

  it("mocker disaggregation - a disaggregated request without a KV transfer plane, or with a bad kvTokens, is a bad_request", async () => {
    const bare = new MockerEngine({ clock: new VirtualClock() });
    cleanups.push(() => bare.close());
    await expectCode(run(bare, request(prompt(60, 10), 3, { disaggregation: { phase: "prefill" } })), "bad_request");
    const { decode } = await trio();
    const handle: KvTransferHandle = {
      transferId: "x",
      address: { local: "nowhere" },
      byteCount: 1,
      checksum: "crc32:00000000",
    };
    await expectCode(
      run(
        decode,
        request(prompt(61, 10), 3, {
          disaggregation: { phase: "decode", kvTransfer: handle, kvTokens: 10, prefillWorkerId: "p" },
        }),
      ),
      "bad_request",
    );
  });
});
