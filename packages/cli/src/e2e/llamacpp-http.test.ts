/**
 * End to end through the OpenAI frontend with the official `openai` client,
 * on real inference: the llama.cpp engine serving the built-in tiny model
 * (random weights, Qwen3 vocabulary), generated into the test cache on first
 * use. The worker and the frontend run on separate runtimes sharing one
 * memory discovery store.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ServedLlamaCppWorker, serveLlamaCppWorker } from "@tdist/engine-llamacpp";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, delay, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/** Shared with the engine's own tests, so the 57 MB model is generated once per machine. */
const TEST_CACHE_DIR = process.env.TDIST_CACHE_DIR || join(tmpdir(), "tdist-test-cache");
const MODEL = "tdist-tiny-random";
const SEQUENCES = 8;
/** Bound of one request or one group of concurrent requests (~300 tokens/s per sequence here, often less under load). */
const REQUEST_BOUND_MS = 20_000;

interface StreamResult {
  text: string;
  /** Text of each SSE chunk, in order. */
  chunks: string[];
  finishReason: string | null | undefined;
  completionTokens: number | undefined;
}

/** Completion parameters plus the vLLM extensions the frontend accepts. */
type CompletionParams = Partial<OpenAI.CompletionCreateParamsStreaming> & { ignore_eos?: boolean; min_tokens?: number };

/** Polls `condition` every 10 ms until it holds, failing after `ms`. */
function waitFor(what: string, ms: number, condition: () => boolean): Promise<void> {
  return withTimeout(what, ms, undefined, async () => {
    while (!condition()) await delay(10);
  });
}

describe("llamacpp over HTTP", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  let worker: ServedLlamaCppWorker;
  let frontend: HttpFrontend;
  let openai: OpenAI;

  const runtime = async (): Promise<DistributedRuntime> => {
    const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(rt);
    return rt;
  };

  /** A streaming greedy completion with usage, collected; every await inside is bounded. */
  const stream = (
    prompt: string,
    params: CompletionParams = {},
    options: OpenAI.RequestOptions = {},
  ): Promise<StreamResult> =>
    withTimeout("streaming completion", REQUEST_BOUND_MS, undefined, async () => {
      const events = await openai.completions.create(
        {
          model: MODEL,
          prompt,
          temperature: 0,
          max_tokens: 16,
          ...params,
          stream: true,
          stream_options: { include_usage: true },
        },
        options,
      );
      const result: StreamResult = { text: "", chunks: [], finishReason: undefined, completionTokens: undefined };
      for await (const chunk of events) {
        const choice = chunk.choices[0];
        if (choice !== undefined) {
          result.chunks.push(choice.text);
          result.text += choice.text;
          result.finishReason = choice.finish_reason ?? result.finishReason;
        }
        if (chunk.usage) result.completionTokens = chunk.usage.completion_tokens;
      }
      return result;
    });

  /** The engine has nothing in flight: parent-side streams and the worker's endpoint both drained. */
  const idle = (): boolean => worker.engine.stats().activeRequests === 0 && worker.generate.inFlight === 0;

  beforeAll(async () => {
    // No model path: the worker's default, the built-in tiny model, generated into the cache on first use.
    worker = await withTimeout("starting the llama.cpp worker", 90_000, undefined, async () =>
      serveLlamaCppWorker(await runtime(), {
        namespace: "llamacpp-http",
        cacheDir: TEST_CACHE_DIR,
        engine: { sequences: SEQUENCES },
      }),
    );
    frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
    });
    await frontend.models.waitForModel(MODEL, 30_000);
    openai = new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: REQUEST_BOUND_MS });
  }, 120_000);

  afterAll(async () => {
    await frontend?.close();
    await worker?.stop({ graceMs: 500 });
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  it("llamacpp http - serves the tiny model's card from the GGUF", async () => {
    const models = await openai.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect(worker.card).toMatchObject({ engine: "llamacpp", limits: { maxSequences: SEQUENCES } });
  });

  it("llamacpp http - a fixed seed at temperature 0 gives the same text twice, chat and completions", async () => {
    const messages = [{ role: "user" as const, content: "Tell me something." }];
    const chat = () =>
      withTimeout("chat completion", REQUEST_BOUND_MS, undefined, () =>
        openai.chat.completions.create({ model: MODEL, messages, temperature: 0, seed: 42, max_tokens: 12 }),
      );
    const first = await chat();
    const second = await chat();
    expect(first.usage?.completion_tokens).toBeGreaterThan(0);
    expect(first.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(second.choices[0]?.message.content).toBe(first.choices[0]?.message.content);
    expect(second.usage?.completion_tokens).toBe(first.usage?.completion_tokens);
    expect(second.usage?.prompt_tokens).toBe(first.usage?.prompt_tokens);

    const a = await stream("Determinism check:", { seed: 42, max_tokens: 12 });
    const b = await stream("Determinism check:", { seed: 42, max_tokens: 12 });
    expect(a.text.length).toBeGreaterThan(0);
    expect(b.text).toBe(a.text);
    expect(b.completionTokens).toBe(a.completionTokens);

    // A fixed seed also reproduces sampled (temperature > 0) output.
    const sampled = (seed: number) => stream("Determinism check:", { seed, temperature: 0.9, max_tokens: 12 });
    const c = await sampled(7);
    const d = await sampled(7);
    expect(d.text).toBe(c.text);
  });

  it("llamacpp http - 8 concurrent streams give the same tokens as 8 sequential requests", async () => {
    const prompts = Array.from({ length: SEQUENCES }, (_, i) => `Request number ${i}: write about topic ${i * 7}.`);
    const params: CompletionParams = { max_tokens: 12, ignore_eos: true };
    const sequential: StreamResult[] = [];
    for (const prompt of prompts) sequential.push(await stream(prompt, params));
    const concurrent = await Promise.all(prompts.map((prompt) => stream(prompt, params)));
    expect(concurrent.map((r) => r.text)).toEqual(sequential.map((r) => r.text));
    for (const r of [...sequential, ...concurrent]) {
      expect(r.completionTokens).toBe(12);
      expect(r.finishReason).toBe("length");
    }
    // Different prompts give different outputs: the comparison is not trivially true.
    expect(new Set(sequential.map((r) => r.text)).size).toBeGreaterThan(1);
  });

  it("llamacpp http - a stop string from the greedy output ends the text before it, with finish_reason stop", async () => {
    const prompt = "Stop string check:";
    const greedy = await stream(prompt, { max_tokens: 24, ignore_eos: true });
    expect(greedy.completionTokens).toBe(24);
    // A few characters from the middle of the greedy text: it definitely appears (first at `at`).
    const chars = Array.from(greedy.text);
    expect(chars.length).toBeGreaterThan(8);
    const middle = Math.floor(chars.length / 2);
    const stop = chars.slice(middle, middle + 3).join("");
    const at = greedy.text.indexOf(stop);
    expect(at).toBeGreaterThanOrEqual(0);

    const streamed = await stream(prompt, { max_tokens: 24, ignore_eos: true, stop: [stop] });
    expect(streamed.text).toBe(greedy.text.slice(0, at));
    expect(streamed.finishReason).toBe("stop");
    expect(streamed.completionTokens).toBeLessThan(24);

    const unary = await withTimeout("completion", REQUEST_BOUND_MS, undefined, () =>
      openai.completions.create({
        model: MODEL,
        prompt,
        temperature: 0,
        max_tokens: 24,
        ignore_eos: true,
        stop,
      } as OpenAI.CompletionCreateParamsNonStreaming),
    );
    expect(unary.choices[0]?.text).toBe(greedy.text.slice(0, at));
    expect(unary.choices[0]?.finish_reason).toBe("stop");
  });

  it("llamacpp http - max_tokens ends with finish_reason length and exactly max_tokens tokens", async () => {
    const unary = await withTimeout("completion", REQUEST_BOUND_MS, undefined, () =>
      openai.completions.create({
        model: MODEL,
        prompt: "Length check:",
        temperature: 0,
        max_tokens: 7,
        ignore_eos: true,
      } as OpenAI.CompletionCreateParamsNonStreaming),
    );
    expect(unary.choices[0]?.finish_reason).toBe("length");
    expect(unary.usage?.completion_tokens).toBe(7);
    const streamed = await stream("Length check:", { max_tokens: 7, ignore_eos: true });
    expect(streamed.finishReason).toBe("length");
    expect(streamed.completionTokens).toBe(7);
    expect(streamed.text).toBe(unary.choices[0]?.text);
  });

  it("llamacpp http - cancelling mid-stream frees the sequence: 8 concurrent requests still fit", async () => {
    // Long requests, so none finishes on its own while the test looks at them.
    const long: CompletionParams = { max_tokens: 2_000, ignore_eos: true };

    /** Starts a stream, counts its chunks, aborts it after `abortAfter` chunks (or when `abortAll` fires). */
    const startStream = (prompt: string, abort: AbortController) => {
      const state = { chunks: 0, finished: false, failed: false, error: undefined as unknown };
      const done = (async () => {
        try {
          const events = await openai.completions.create(
            { model: MODEL, prompt, temperature: 0, ...long, stream: true },
            { signal: abort.signal },
          );
          for await (const chunk of events) {
            state.chunks++;
            if (chunk.choices[0]?.finish_reason) state.finished = true;
          }
        } catch (err) {
          state.failed = true;
          state.error = err;
        }
      })();
      return { state, done };
    };

    // One stream aborted after a few chunks.
    const first = new AbortController();
    const one = startStream("Cancel me:", first);
    await waitFor("three chunks", REQUEST_BOUND_MS, () => one.state.chunks >= 3);
    first.abort();
    await withTimeout("the aborted stream ends", 5_000, undefined, () => one.done);
    expect(one.state.finished).toBe(false);
    await waitFor("the engine freed the aborted request", 5_000, idle);

    // Then 8 at once: every one gets tokens while none has finished, so all 8 hold a sequence together
    // (a sequence still held by the aborted request would keep one waiting until another finished).
    const controllers = Array.from({ length: SEQUENCES }, () => new AbortController());
    const streams = controllers.map((controller, i) => startStream(`After cancel ${i}:`, controller));
    try {
      await waitFor("all 8 streams produce tokens", REQUEST_BOUND_MS, () =>
        streams.every((s) => s.state.chunks > 0 || s.state.failed),
      );
      expect(streams.map((s) => s.state.failed)).toEqual(Array(SEQUENCES).fill(false));
      expect(streams.map((s) => s.state.finished)).toEqual(Array(SEQUENCES).fill(false));
    } finally {
      for (const controller of controllers) controller.abort();
      await withTimeout("the aborted streams end", 5_000, undefined, () => Promise.all(streams.map((s) => s.done)));
    }
    await waitFor("the engine freed the 8 aborted requests", 5_000, idle);

    // And 8 short requests after those 8 cancels all complete.
    const after = await Promise.all(
      Array.from({ length: SEQUENCES }, (_, i) =>
        stream(`Short after cancel ${i}:`, { max_tokens: 4, ignore_eos: true }),
      ),
    );
    for (const r of after) {
      expect(r.finishReason).toBe("length");
      expect(r.completionTokens).toBe(4);
    }
  });

  it("llamacpp http - a SIGKILLed engine child restarts and the next request succeeds", async () => {
    const prompt = "After a crash:";
    const before = await stream(prompt, { max_tokens: 8, ignore_eos: true });
    const pid = worker.engine.childPid;
    expect(pid).toBeTypeOf("number");
    const restarts = worker.engine.stats().restarts;

    // Kill the child under an in-flight stream: that stream may fail or end early with an error.
    let chunks = 0;
    const inFlight = (async () => {
      const events = await openai.completions.create({
        model: MODEL,
        prompt: "In flight during the crash:",
        temperature: 0,
        max_tokens: 2_000,
        ignore_eos: true,
        stream: true,
      } as OpenAI.CompletionCreateParamsStreaming);
      let finish: string | null | undefined;
      for await (const chunk of events) {
        chunks++;
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      return finish;
    })();
    inFlight.catch(() => {});
    await waitFor("the in-flight stream produces tokens", REQUEST_BOUND_MS, () => chunks >= 2);
    process.kill(pid as number, "SIGKILL");
    const outcome = await withTimeout("the in-flight stream ends", REQUEST_BOUND_MS, undefined, () =>
      inFlight.then(
        (finish) => `finished: ${String(finish)}`,
        (err: unknown) => `failed: ${String(err)}`,
      ),
    );
    // It did not run to its 2000 tokens.
    expect(outcome).not.toBe("finished: length");

    // The next request succeeds within a bounded wait (the engine restarts the child and reloads the model).
    await withTimeout("the engine restarts", 60_000, undefined, () => worker.engine.ready());
    const after = await stream(prompt, { max_tokens: 8, ignore_eos: true });
    expect(after.finishReason).toBe("length");
    expect(after.completionTokens).toBe(8);
    // Same greedy output as before the crash: the new child loaded the same model.
    expect(after.text).toBe(before.text);
    expect(worker.engine.stats().restarts).toBe(restarts + 1);
    expect(worker.engine.childPid).not.toBe(pid);
  });
});
