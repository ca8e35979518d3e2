/**
 * Sampling seeds end to end, through the OpenAI frontend with the official
 * `openai` client, against the mocker and the llama.cpp engine (the built-in
 * tiny model): without a seed each of `n` choices samples on its own random
 * seed, so they differ (node-llama-cpp's fallback, the time in seconds, and
 * the mocker's prompt hash made them identical); with a seed the whole
 * response repeats.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveLlamaCppWorker } from "@tdist/engine-llamacpp";
import { serveMockerWorker } from "@tdist/engine-mocker";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/** Shared with the engine's own tests, so the 57 MB model is generated once per machine. */
const TEST_CACHE_DIR = process.env.TDIST_CACHE_DIR || join(tmpdir(), "tdist-test-cache");
const LLAMACPP_MODEL = "tdist-tiny-random";
const MOCKER_MODEL = "mocker";
const REQUEST_BOUND_MS = 20_000;

/** Completion parameters plus the vLLM extension the frontend accepts. */
type CompletionParams = OpenAI.CompletionCreateParamsNonStreaming & { ignore_eos?: boolean };

describe("sampling seeds over HTTP", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  const stops: (() => Promise<void>)[] = [];
  let frontend: HttpFrontend;
  let openai: OpenAI;

  const runtime = async (): Promise<DistributedRuntime> => {
    const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(rt);
    return rt;
  };

  /** The texts of the choices of one unary completion, in index order. */
  const choices = (params: Partial<CompletionParams> & { model: string }): Promise<string[]> =>
    withTimeout("completion", REQUEST_BOUND_MS, undefined, async () => {
      const body: CompletionParams = { prompt: "Once upon a time", max_tokens: 24, ignore_eos: true, ...params };
      const response = await openai.completions.create(body);
      return [...response.choices].sort((a, b) => a.index - b.index).map((choice) => choice.text);
    });

  beforeAll(async () => {
    const mocker = await serveMockerWorker(await runtime(), {
      namespace: "sampling-seeds",
      component: "mocker",
      engine: { speedupRatio: 100 },
    });
    stops.push(() => mocker.stop({ graceMs: 500 }));
    const llamacpp = await withTimeout("starting the llama.cpp worker", 90_000, undefined, async () =>
      serveLlamaCppWorker(await runtime(), {
        namespace: "sampling-seeds",
        cacheDir: TEST_CACHE_DIR,
        engine: { sequences: 4, contextSize: 512 },
      }),
    );
    stops.push(() => llamacpp.stop({ graceMs: 500 }));
    frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
    });
    await frontend.models.waitForModel(MOCKER_MODEL, 30_000);
    await frontend.models.waitForModel(LLAMACPP_MODEL, 30_000);
    openai = new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: REQUEST_BOUND_MS });
  }, 120_000);

  afterAll(async () => {
    await frontend?.close();
    for (const stop of stops) await stop();
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  for (const model of [MOCKER_MODEL, LLAMACPP_MODEL]) {
    it(`sampling seeds - ${model}: n=4 without a seed gives four different choices`, async () => {
      // 24 tokens at temperature 1.5 over a 151669-token vocabulary: two equal choices would be far beyond chance.
      const texts = await choices({ model, n: 4, temperature: 1.5 });
      expect(texts).toHaveLength(4);
      expect(texts.every((text) => text.length > 0)).toBe(true);
      expect(new Set(texts).size).toBe(4);
    });

    it(`sampling seeds - ${model}: the same seeded request twice gives the same choices`, async () => {
      const first = await choices({ model, n: 4, temperature: 1.5, seed: 1234 });
      const second = await choices({ model, n: 4, temperature: 1.5, seed: 1234 });
      // Each choice has its own seed (seed + index), so they differ from each other.
      expect(new Set(first).size).toBe(4);
      if (model === MOCKER_MODEL) {
        expect(second).toEqual(first);
        return;
      }
      // llama.cpp decodes concurrent sequences in one batch, and which sequences share a step depends on
      // timing; batched matrix products round differently from single ones, so at temperature 1.5 a late
      // token can flip (vLLM documents the same limit). A seeded request that runs alone is reproducible,
      // and choice i of an n=4 request is the request with seed + i.
      const alone = async (seed: number): Promise<string | undefined> =>
        (await choices({ model, temperature: 1.5, seed }))[0];
      const runs = [await alone(1234), await alone(1234), await alone(1235)];
      expect(runs[1]).toBe(runs[0]);
      expect(runs[2]).not.toBe(runs[0]);
    });
  }
});
