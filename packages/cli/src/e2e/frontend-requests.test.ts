/**
 * What the OpenAI frontend does with the fields and sizes a new user sends:
 * what it refuses (naming the field), what it defaults, what reaches the
 * engine, which worker it names, and how it treats a prompt far too large.
 */
import { serveEchoWorker } from "@tdist/engine-echo";
import {
  builtinModelAssets,
  HttpFrontend,
  loadTokenizer,
  type PreprocessedRequest,
  type SamplingOptions,
  type ServedModel,
  serveModel,
  TokenizerPipeline,
} from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const BOUND_MS = 15_000;
const assets = builtinModelAssets();
const tokenizer = loadTokenizer({ tokenizerJson: assets.tokenizerJson });

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

describe("frontend requests", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  const frontends: HttpFrontend[] = [];
  const seen: SamplingOptions[] = [];
  let frontend: HttpFrontend;
  let openai: OpenAI;
  let echo: ServedModel;

  const runtime = async (): Promise<DistributedRuntime> => {
    const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(rt);
    return rt;
  };

  const startFrontend = async (options: Partial<Parameters<typeof HttpFrontend.start>[0]> = {}) => {
    const started = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      ...options,
    });
    frontends.push(started);
    await started.models.waitForModel("echo", BOUND_MS);
    return started;
  };

  const post = async (path: string, body: unknown, at = frontend.url): Promise<Response> =>
    withTimeout(`POST ${path}`, BOUND_MS, undefined, () =>
      fetch(`${at}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    );

  beforeAll(async () => {
    echo = await serveEchoWorker(await runtime(), { namespace: "requests" });
    // An engine that records what reaches it, to see the request as the engine gets it.
    await serveModel(await runtime(), {
      namespace: "recorded",
      tokenizerJson: assets.tokenizerJson,
      card: { name: "recorder", engine: "recorder", ...assets.cardFields, kvBlockSize: 16, limits: {} },
      engine: async function* (request: PreprocessedRequest) {
        seen.push(request.sampling);
        yield { tokenIds: [request.tokenIds[0] as number], finishReason: "stop" };
      },
    });
    frontend = await startFrontend();
    await frontend.models.waitForModel("recorder", BOUND_MS);
    openai = new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: BOUND_MS });
  });

  afterAll(async () => {
    await Promise.all(frontends.map((f) => f.close({ graceMs: 500 })));
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  it("frontend requests - tool calling and suffix are refused with a 400 naming the field; the defaults clients send work", async () => {
    const messages = [{ role: "user", content: "call a tool" }];
    const tool = { type: "function", function: { name: "lookup", parameters: { type: "object" } } };
    const refused: [string, Record<string, unknown>, string][] = [
      ["/v1/chat/completions", { messages, tools: [tool] }, "tools"],
      ["/v1/chat/completions", { messages, tool_choice: "required" }, "tool_choice"],
      ["/v1/chat/completions", { messages, tool_choice: { type: "function", function: { name: "x" } } }, "tool_choice"],
      ["/v1/chat/completions", { messages, functions: [{ name: "lookup" }] }, "functions"],
      ["/v1/chat/completions", { messages, function_call: { name: "lookup" } }, "function_call"],
      ["/v1/completions", { prompt: "def f(", suffix: "return 1" }, "suffix"],
    ];
    for (const [path, body, param] of refused) {
      const response = await post(path, { model: "echo", ...body });
      expect(response.status, param).toBe(400);
      const error = (await response.json()) as ErrorBody;
      expect(error.error.param).toBe(param);
      expect(error.error.type).toBe("invalid_request_error");
    }
    const served: Record<string, unknown>[] = [
      { tools: [] },
      { tool_choice: "none" },
      { tool_choice: "auto" },
      { tools: null, tool_choice: null, functions: null, function_call: "none" },
    ];
    for (const fields of served) {
      const response = await post("/v1/chat/completions", { model: "echo", messages, ...fields });
      expect(response.status, JSON.stringify(fields)).toBe(200);
    }
    expect((await post("/v1/completions", { model: "echo", prompt: "x", suffix: null })).status).toBe(200);
  });

  it("frontend requests - logit_bias reaches the engine as sampling.logitBias; bad ids, biases and sizes get a 400", async () => {
    seen.length = 0;
    await openai.completions.create({ model: "recorder", prompt: "bias", logit_bias: { "15": -100, "151668": 42 } });
    expect(seen.at(-1)?.logitBias).toEqual({ "15": -100, "151668": 42 });
    const cases: [unknown, string][] = [
      [{ [String(tokenizer.vocabSize)]: 1 }, "logit_bias"],
      [{ abc: 1 }, "logit_bias"],
      [{ "15": 101 }, "logit_bias.15"],
      [{ "15": "high" }, "logit_bias.15"],
      [Object.fromEntries(Array.from({ length: 301 }, (_, i) => [String(i), 1])), "logit_bias"],
      [[1, 2], "logit_bias"],
    ];
    for (const [logitBias, param] of cases) {
      const response = await post("/v1/completions", { model: "recorder", prompt: "x", logit_bias: logitBias });
      expect(response.status, JSON.stringify(logitBias).slice(0, 40)).toBe(400);
      expect(((await response.json()) as ErrorBody).error.param).toBe(param);
    }
  });

  it("frontend requests - completions default to 16 tokens as OpenAI and vLLM do; chat to what the context has left", async () => {
    const prompt = Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ");
    expect(tokenizer.encode(prompt).length).toBeGreaterThan(16);
    const completion = await openai.completions.create({ model: "echo", prompt });
    expect(completion.usage?.completion_tokens).toBe(16);
    expect(completion.choices[0]?.finish_reason).toBe("length");
    const chat = await openai.chat.completions.create({ model: "echo", messages: [{ role: "user", content: prompt }] });
    expect(chat.choices[0]?.finish_reason).toBe("stop");
    expect(chat.usage?.completion_tokens).toBe(chat.usage?.prompt_tokens);
  });

  it("frontend requests - the echo engine answers a chat with the last user message's text, without role markers", async () => {
    const messages = [
      { role: "system" as const, content: "You are an echo." },
      { role: "user" as const, content: "first question" },
      { role: "assistant" as const, content: "first answer" },
      { role: "user" as const, content: "Hello, echo! ünïcödé" },
    ];
    const chat = await openai.chat.completions.create({ model: "echo", messages });
    expect(chat.choices[0]?.message.content).toBe("Hello, echo! ünïcödé");
    expect(chat.usage?.prompt_tokens).toBe(tokenizer.encode("Hello, echo! ünïcödé").length);
    let streamed = "";
    for await (const chunk of await openai.chat.completions.create({ model: "echo", messages, stream: true })) {
      streamed += chunk.choices[0]?.delta.content ?? "";
    }
    expect(streamed).toBe("Hello, echo! ünïcödé");
  });

  it("frontend requests - the 413 states the body limit in bytes", async () => {
    const small = await startFrontend({ bodyLimitBytes: 4096 });
    const response = await post("/v1/completions", { model: "echo", prompt: "x".repeat(8192) }, small.url);
    expect(response.status).toBe(413);
    const error = (await response.json()) as ErrorBody;
    expect(error.error.code).toBe("body_too_large");
    expect(error.error.message).toContain("4096 bytes");
  });

  it("frontend requests - a 9 MB prompt is refused as context_length_exceeded from its size while a small request is served", async () => {
    const huge = "word ".repeat(1_800_000);
    const startedAt = performance.now();
    const [hugeResponse, small] = await Promise.all([
      post("/v1/completions", { model: "echo", prompt: huge }).then(async (response) => ({
        status: response.status,
        body: (await response.json()) as ErrorBody,
        at: performance.now() - startedAt,
      })),
      openai.completions.create({ model: "echo", prompt: "small and prompt", max_tokens: 8 }),
    ]);
    expect(hugeResponse.status).toBe(400);
    expect(hugeResponse.body.error.code).toBe("context_length_exceeded");
    expect(hugeResponse.body.error.param).toBe("prompt");
    // Tokenizing it blocks the event loop for seconds (2.5-3 s here); refusing it from its size takes ~0.2 s.
    expect(hugeResponse.at).toBeLessThan(1_500);
    expect(small.choices[0]?.text).toBe("small and prompt");
    const chat = await post("/v1/chat/completions", { model: "echo", messages: [{ role: "user", content: huge }] });
    expect(chat.status).toBe(400);
    expect(((await chat.json()) as ErrorBody).error).toMatchObject({ code: "context_length_exceeded" });
  });

  it("frontend requests - x-tdist-worker names the chosen worker under every router mode, unary and streamed", async () => {
    for (const router of ["round-robin", "random", "least-loaded", "power-of-two", "kv-approx"] as const) {
      const routed = await startFrontend({ router });
      const unary = await post("/v1/completions", { model: "echo", prompt: "where", max_tokens: 2 }, routed.url);
      expect(unary.status, router).toBe(200);
      expect(unary.headers.get("x-tdist-worker"), router).toBe(echo.instanceId);
      const streamed = await post(
        "/v1/completions",
        { model: "echo", prompt: "where", max_tokens: 2, stream: true },
        routed.url,
      );
      expect(streamed.headers.get("x-tdist-worker"), router).toBe(echo.instanceId);
      await streamed.text();
    }
  });
});
