/**
 * Closing the frontend (what SIGINT/SIGTERM does to `tdist run` and
 * `tdist frontend`): requests in flight get a grace period, and those still
 * running when it ends are cancelled with a clear error instead of holding
 * the process up.
 */
import { serveMockerWorker } from "@tdist/engine-mocker";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import OpenAI from "openai";
import { afterAll, describe, expect, it } from "vitest";
import { sseEvents } from "../testing/sse-events.js";

const BOUND_MS = 15_000;

describe("frontend shutdown", () => {
  const runtimes: DistributedRuntime[] = [];

  /** A frontend and one real-time mocker worker (about 5 ms per token) on their own discovery store. */
  async function cluster(): Promise<{ frontend: HttpFrontend; openai: OpenAI }> {
    const store = new MemoryDiscoveryStore();
    const runtime = async (): Promise<DistributedRuntime> => {
      const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
      runtimes.push(rt);
      return rt;
    };
    await serveMockerWorker(await runtime(), { namespace: "shutdown", engine: { speedupRatio: 1 } });
    const frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
    });
    await frontend.models.waitForModel("mocker", BOUND_MS);
    const openai = new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: BOUND_MS });
    return { frontend, openai };
  }

  /** The raw SSE events of a streaming completion, as parsed JSON (the `[DONE]` marker as the string). */
  async function streamEvents(url: string, maxTokens: number, onFirst: () => void): Promise<unknown[]> {
    const response = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "mocker",
        prompt: "tell me a long story",
        max_tokens: maxTokens,
        ignore_eos: true,
        stream: true,
      }),
    });
    return sseEvents(response, (count) => {
      if (count === 1) onFirst();
    });
  }

  afterAll(async () => {
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  it("frontend shutdown - a stream that ends within the grace finishes normally", async () => {
    const { frontend } = await cluster();
    let closing: Promise<void> | undefined;
    const events = await withTimeout("short stream", BOUND_MS, undefined, () =>
      streamEvents(frontend.url, 40, () => {
        closing = frontend.close({ graceMs: 10_000 });
      }),
    );
    await withTimeout("close", BOUND_MS, undefined, async () => closing);
    const finishes = events.flatMap((e) =>
      typeof e === "object" && e !== null && "choices" in e
        ? (e as { choices: { finish_reason: string | null }[] }).choices.map((c) => c.finish_reason)
        : [],
    );
    expect(finishes.filter((f) => f !== null)).toEqual(["length"]);
    expect(events.at(-1)).toBe("[DONE]");
  });

  it("frontend shutdown - requests still running when the grace ends are cancelled: a stream gets an error event, a unary request a 503", async () => {
    const { frontend, openai } = await cluster();
    const unary = openai.completions
      .create({ model: "mocker", prompt: "a very long answer", max_tokens: 20_000, ignore_eos: true } as never)
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    let closing: Promise<void> | undefined;
    let closeStarted = 0;
    const events = await withTimeout("long stream", BOUND_MS, undefined, () =>
      streamEvents(frontend.url, 20_000, () => {
        closeStarted = performance.now();
        closing = frontend.close({ graceMs: 300 });
      }),
    );
    await withTimeout("close", BOUND_MS, undefined, async () => closing);
    // 20 000 tokens take minutes; the grace is 300 ms.
    expect(performance.now() - closeStarted).toBeLessThan(5_000);
    const finishes = events.flatMap((e) =>
      typeof e === "object" && e !== null && "choices" in e
        ? (e as { choices: { finish_reason: string | null }[] }).choices.map((c) => c.finish_reason)
        : [],
    );
    expect(finishes.filter((f) => f !== null)).toEqual(["cancelled"]);
    expect(events).toContainEqual({
      error: {
        message: "the server is shutting down",
        type: "service_unavailable",
        param: null,
        code: "shutting_down",
      },
    });
    expect(events.at(-1)).toBe("[DONE]");
    const refused = await withTimeout("unary request", BOUND_MS, undefined, () => unary);
    expect(refused).toBeInstanceOf(OpenAI.APIError);
    expect((refused as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect((refused as InstanceType<typeof OpenAI.APIError>).code).toBe("shutting_down");
  });
});
