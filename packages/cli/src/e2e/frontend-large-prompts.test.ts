/**
 * Large prompts are tokenized off the event loop: while one that takes
 * seconds to tokenize is in the frontend's tokenizer thread, small requests
 * are served; one past the tokenize deadline is refused with a 400
 * `prompt_too_complex`; closing the frontend stops the thread.
 */
import { request as httpRequest } from "node:http";
import { serveEchoWorker } from "@tdist/engine-echo";
import { builtinModelAssets, HttpFrontend, loadTokenizer, type ModelCard, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const BOUND_MS = 30_000;
const tokenizer = loadTokenizer({ tokenizerJson: builtinModelAssets().tokenizerJson });

interface Answer {
  status: number;
  body: {
    usage?: { prompt_tokens: number };
    choices?: { text?: string }[];
    error?: { code: string | null; param: string | null; type: string };
  };
}

/** POSTs `body`; `sent` resolves once the whole body has been handed to the socket. */
function post(url: string, path: string, body: unknown): { sent: Promise<void>; answer: Promise<Answer> } {
  let onSent: () => void = () => {};
  const sent = new Promise<void>((resolve) => (onSent = resolve));
  const answer = withTimeout(
    `POST ${path}`,
    BOUND_MS,
    undefined,
    () =>
      new Promise<Answer>((resolve, reject) => {
        const req = httpRequest(
          `${url}${path}`,
          { method: "POST", headers: { "content-type": "application/json" } },
          (res) => {
            let text = "";
            res.setEncoding("utf8");
            res.on("data", (chunk: string) => (text += chunk));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Answer["body"] }));
            res.on("error", reject);
          },
        );
        req.on("error", reject);
        req.on("finish", onSent);
        req.end(JSON.stringify(body));
      }),
  );
  return { sent, answer };
}

describe("frontend large prompts", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  const frontends: HttpFrontend[] = [];
  const pipelines: TokenizerPipeline[] = [];

  const runtime = async (): Promise<DistributedRuntime> => {
    const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(rt);
    return rt;
  };

  const startFrontend = async (tokenizeTimeoutMs: number): Promise<HttpFrontend> => {
    const frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: async (card: ModelCard, tokenizerJson: string) => {
        const pipeline = new TokenizerPipeline(card, tokenizerJson, { tokenizeTimeoutMs });
        pipelines.push(pipeline);
        return pipeline;
      },
      port: 0,
    });
    frontends.push(frontend);
    await frontend.models.waitForModel("echo", BOUND_MS);
    return frontend;
  };

  beforeAll(async () => {
    await serveEchoWorker(await runtime(), { namespace: "large-prompts" });
  });

  afterAll(async () => {
    await Promise.all(frontends.map((frontend) => frontend.close({ graceMs: 500 })));
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  it("frontend large prompts - a small request is answered while a pathological prompt is tokenized", async () => {
    const frontend = await startFrontend(BOUND_MS);
    const pathological = "a".repeat(200_000);
    const order: string[] = [];
    const large = post(frontend.url, "/v1/completions", { model: "echo", prompt: pathological, max_tokens: 1 });
    const largeAnswer = large.answer.then((answer) => {
      order.push("large");
      return answer;
    });
    await large.sent;
    const small = await post(frontend.url, "/v1/completions", { model: "echo", prompt: "small one", max_tokens: 8 })
      .answer;
    order.push("small");
    expect(small.status).toBe(200);
    expect(small.body.choices?.[0]?.text).toBe("small one");
    const answer = await largeAnswer;
    expect(order).toEqual(["small", "large"]);
    expect(answer.status).toBe(200);
    expect(answer.body.usage?.prompt_tokens).toBe(tokenizer.encode(pathological).length);
  }, 60_000);

  it("frontend large prompts - a prompt past the tokenize deadline is a 400 prompt_too_complex; the next is served", async () => {
    const frontend = await startFrontend(3_000);
    const ordinary = "The quick brown fox jumps over the lazy dog. ".repeat(1_000);
    const warm = await post(frontend.url, "/v1/completions", { model: "echo", prompt: ordinary, max_tokens: 1 }).answer;
    expect(warm.status).toBe(200);
    expect(warm.body.usage?.prompt_tokens).toBe(tokenizer.encode(ordinary).length);
    const refused = await post(frontend.url, "/v1/chat/completions", {
      model: "echo",
      messages: [{ role: "user", content: "a".repeat(1_000_000) }],
    }).answer;
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({
      code: "prompt_too_complex",
      param: "messages",
      type: "invalid_request_error",
    });
    const after = await post(frontend.url, "/v1/completions", { model: "echo", prompt: ordinary, max_tokens: 1 })
      .answer;
    expect(after.status).toBe(200);
  }, 60_000);

  it("frontend large prompts - closing the frontend stops its tokenizer thread", async () => {
    const frontend = await startFrontend(BOUND_MS);
    const ordinary = "Lorem ipsum dolor sit amet. ".repeat(1_000);
    const warm = await post(frontend.url, "/v1/completions", { model: "echo", prompt: ordinary, max_tokens: 1 }).answer;
    expect(warm.status).toBe(200);
    const pipeline = pipelines.at(-1) as TokenizerPipeline;
    expect(pipeline.tokenizerThreads).toBe(1);
    await withTimeout("close", BOUND_MS, undefined, () => frontend.close({ graceMs: 100 }));
    expect(pipeline.tokenizerThreads).toBe(0);
  }, 60_000);
});
