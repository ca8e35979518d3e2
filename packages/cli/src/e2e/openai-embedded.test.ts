import { serveEchoWorker } from "@tdist/engine-echo";
import { serveMockerWorker } from "@tdist/engine-mocker";
import { builtinModelAssets, HttpFrontend, loadTokenizer, type ServedModel, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, delay, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const assets = builtinModelAssets();
const tokenizer = loadTokenizer({ tokenizerJson: assets.tokenizerJson });

describe("openai frontend - embedded", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  let frontend: HttpFrontend;
  let openai: OpenAI;
  let echo: ServedModel;

  const runtime = async () => {
    const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(rt);
    return rt;
  };

  beforeAll(async () => {
    echo = await serveEchoWorker(await runtime(), { namespace: "e2e", delayMsPerToken: 1 });
    await serveMockerWorker(await runtime(), { namespace: "e2e", engine: { speedupRatio: 100 } });
    frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      bodyLimitBytes: 1024 * 1024,
    });
    await frontend.models.waitForModel("echo");
    await frontend.models.waitForModel("mocker");
    openai = new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 10_000 });
  });

  afterAll(async () => {
    await frontend?.close();
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  it("openai - lists the served models", async () => {
    const models = await openai.models.list();
    expect(models.data.map((m) => m.id).sort()).toEqual(["echo", "mocker"]);
  });

  it("openai - completion echoes the prompt with usage equal to the tokenizer's counts", async () => {
    const prompt = "The quick brown fox jumps over the lazy dog. 你好，世界 🌍";
    const count = tokenizer.encode(prompt).length;
    const completion = await openai.completions.create({ model: "echo", prompt, max_tokens: 100 });
    expect(completion.choices[0]?.text).toBe(prompt);
    expect(completion.choices[0]?.finish_reason).toBe("stop");
    expect(completion.usage).toMatchObject({ prompt_tokens: count, completion_tokens: count, total_tokens: 2 * count });
  });

  it("openai - streaming completion reassembles the text and reports usage", async () => {
    const prompt = "streaming tokens one by one, multi-byte: ünïcödé";
    const stream = await openai.completions.create({
      model: "echo",
      prompt,
      max_tokens: 100,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(prompt);
    expect(finish).toBe("stop");
    expect(usage?.prompt_tokens).toBe(tokenizer.encode(prompt).length);
  });

  it("openai - max_tokens ends with finish_reason length", async () => {
    const completion = await openai.completions.create({ model: "echo", prompt: "a b c d e f g h", max_tokens: 3 });
    expect(completion.choices[0]?.finish_reason).toBe("length");
    expect(completion.usage?.completion_tokens).toBe(3);
    expect(completion.choices[0]?.text).toBe(tokenizer.decode(tokenizer.encode("a b c d e f g h").slice(0, 3)));
  });

  it("openai - stop strings end the text before the stop string, streaming and not", async () => {
    const prompt = "one two three four five";
    const unary = await openai.completions.create({ model: "echo", prompt, stop: [" three", "nine"] });
    expect(unary.choices[0]?.text).toBe("one two");
    expect(unary.choices[0]?.finish_reason).toBe("stop");
    const stream = await openai.completions.create({ model: "echo", prompt, stop: " four", stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe("one two three");
  });

  it("openai - chat completions, streaming and not, from the mocker with the real chat template", async () => {
    const messages = [
      { role: "system" as const, content: "You are terse." },
      { role: "user" as const, content: "Say hi." },
    ];
    const unary = await openai.chat.completions.create({ model: "mocker", messages, max_tokens: 5, seed: 7 });
    expect(unary.choices[0]?.finish_reason).toBe("length");
    expect(unary.usage?.completion_tokens).toBe(5);
    const rendered =
      "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n";
    expect(unary.usage?.prompt_tokens).toBe(tokenizer.encode(rendered, { addSpecialTokens: false }).length);
    const stream = await openai.chat.completions.create({
      model: "mocker",
      messages,
      max_tokens: 5,
      seed: 7,
      stream: true,
    });
    let content = "";
    let role: string | undefined;
    for await (const chunk of stream) {
      role ??= chunk.choices[0]?.delta.role;
      content += chunk.choices[0]?.delta.content ?? "";
    }
    expect(role).toBe("assistant");
    expect(content).toBe(unary.choices[0]?.message.content);
  });

  it("openai - n choices are served", async () => {
    const completion = await openai.completions.create({
      model: "mocker",
      prompt: "pick",
      max_tokens: 4,
      n: 3,
      seed: 1,
    });
    expect(completion.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(completion.usage?.completion_tokens).toBe(12);
  });

  it("openai - invalid parameters get 400 with an OpenAI error body naming the field", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ model: "echo", prompt: "x", temperature: "hot" }, "temperature"],
      [{ model: "echo", prompt: "x", max_tokens: -1 }, "max_tokens"],
      [{ model: "echo" }, "prompt"],
      [{ model: "echo", prompt: "x", stop: 42 }, "stop"],
      [{ model: "echo", prompt: "x", top_p: 7 }, "top_p"],
    ];
    for (const [body, param] of cases) {
      const response = await fetch(`${frontend.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(response.status).toBe(400);
      const error = (await response.json()) as {
        error: { message: string; type: string; param: string; code: string };
      };
      expect(error.error.type).toBe("invalid_request_error");
      expect(error.error.param).toBe(param);
      expect(typeof error.error.message).toBe("string");
    }
  });

  it("openai - what the server cannot honour is refused, not ignored: response_format json, best_of > 1", async () => {
    await expect(
      openai.chat.completions.create({
        model: "echo",
        messages: [{ role: "user", content: "json please" }],
        response_format: { type: "json_object" },
      }),
    ).rejects.toMatchObject({ status: 400, param: "response_format.type" });
    await expect(openai.completions.create({ model: "echo", prompt: "x", best_of: 3 })).rejects.toMatchObject({
      status: 400,
      param: "best_of",
    });
    // What clients send by default still works.
    const text = await openai.chat.completions.create({
      model: "echo",
      messages: [{ role: "user", content: "plain" }],
      response_format: { type: "text" },
    });
    expect(text.choices[0]?.finish_reason).toBe("stop");
    const one = await openai.completions.create({ model: "echo", prompt: "x", best_of: 1 });
    expect(one.choices[0]?.text).toBe("x");
  });

  it("openai - a field with several accepted forms names them all when the value fits none", async () => {
    const cases: [string, Record<string, unknown>, string, string][] = [
      ["/v1/completions", { model: "echo", prompt: [] }, "prompt", "array of token ids (integers >= 0)"],
      ["/v1/completions", { model: "echo", prompt: [-5] }, "prompt", "array of token ids (integers >= 0)"],
      [
        "/v1/chat/completions",
        { model: "echo", messages: [{ role: "user", content: 7 }] },
        "messages.0.content",
        "a string, an array of content parts or null",
      ],
    ];
    for (const [path, body, param, forms] of cases) {
      const response = await fetch(`${frontend.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(response.status).toBe(400);
      const error = (await response.json()) as { error: { message: string; param: string } };
      expect(error.error.param).toBe(param);
      expect(error.error.message).toContain(forms);
      expect(error.error.message).not.toContain("must be string");
    }
  });

  it("openai - unknown models are 404, malformed JSON 400, oversize bodies 413, long prompts 400", async () => {
    await expect(openai.completions.create({ model: "nope", prompt: "x" })).rejects.toMatchObject({
      status: 404,
      code: "model_not_found",
    });
    const post = (body: string) =>
      fetch(`${frontend.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
    const malformed = await post('{"model": "echo", "messages": [');
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: { code: string } }).error.code).toBe("invalid_json");
    const oversize = await post(
      JSON.stringify({ model: "echo", messages: [{ role: "user", content: "x".repeat(2_000_000) }] }),
    );
    expect(oversize.status).toBe(413);
    expect(((await oversize.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
    await expect(
      openai.completions.create({ model: "echo", prompt: Array.from({ length: 41_000 }, () => 1) }),
    ).rejects.toMatchObject({ status: 400, code: "context_length_exceeded" });
  });

  it("openai - a client that disconnects mid-stream cancels the engine request", async () => {
    const controller = new AbortController();
    const prompt = "word ".repeat(2_000);
    const stream = await openai.completions.create(
      { model: "echo", prompt, max_tokens: 2_000, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _ of stream) {
        if (++chunks === 3) {
          expect(echo.generate.inFlight).toBe(1);
          controller.abort();
        }
      }
    } catch {
      // The client's own abort error.
    }
    await withTimeout("engine request cancelled", 2_000, undefined, async () => {
      while (echo.generate.inFlight > 0) await delay(10);
    });
    expect(echo.generate.inFlight).toBe(0);
  });

  it("openai - /health, /live and /metrics", async () => {
    expect((await fetch(`${frontend.url}/live`)).status).toBe(200);
    const health = await fetch(`${frontend.url}/health`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`${frontend.url}/metrics`)).text();
    expect(metrics).toMatch(
      /dynamo_frontend_requests_total\{model="echo",endpoint="completions",request_type="unary",status="success"\} \d+/,
    );
    expect(metrics).toContain("dynamo_frontend_time_to_first_token_seconds_bucket");
    expect(metrics).toContain("dynamo_frontend_output_tokens_total");
  });
});

describe("openai frontend - live model discovery", () => {
  it("openai - a model appears with its first worker and disappears with its last", async () => {
    const store = new MemoryDiscoveryStore();
    const make = () => DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    const frontendRuntime = await make();
    const frontend = await HttpFrontend.start({
      runtime: frontendRuntime,
      createPipeline: TokenizerPipeline.create,
      port: 0,
    });
    const [w1, w2] = [await make(), await make()];
    try {
      const models = async () =>
        ((await (await fetch(`${frontend.url}/v1/models`)).json()) as { data: { id: string }[] }).data.map((m) => m.id);
      expect(await models()).toEqual([]);
      expect((await fetch(`${frontend.url}/health`)).status).toBe(503);
      const first = await serveEchoWorker(w1, { namespace: "live", modelName: "live-model" });
      await frontend.models.waitForModel("live-model");
      expect(await models()).toEqual(["live-model"]);
      expect((await fetch(`${frontend.url}/health`)).status).toBe(200);
      await serveEchoWorker(w2, { namespace: "live", modelName: "live-model" });
      await first.stop();
      expect(await models()).toEqual(["live-model"]);
      await w2.shutdown();
      await withTimeout("model removed", 2_000, undefined, async () => {
        while ((await models()).length > 0) await delay(10);
      });
      expect((await fetch(`${frontend.url}/health`)).status).toBe(503);
    } finally {
      await frontend.close();
      await Promise.all([w1.shutdown(), w2.shutdown(), frontendRuntime.shutdown()]);
    }
  });
});
