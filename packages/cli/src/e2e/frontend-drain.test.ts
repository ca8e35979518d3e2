/**
 * While the frontend drains (`close({ graceMs })` with a request in flight),
 * it keeps listening, so a client that connects anew hears a 503
 * `shutting_down` instead of a refused connection; once nothing is in
 * flight it stops listening.
 */
import { request } from "node:http";
import { serveEchoWorker } from "@tdist/engine-echo";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import { afterAll, describe, expect, it } from "vitest";

const BOUND_MS = 15_000;

/** A POST on a connection of its own (no agent, no keep-alive pool). */
function postOnFreshConnection(url: string, body: unknown): Promise<{ status: number; body: string; close: boolean }> {
  return withTimeout("fresh connection", BOUND_MS, undefined, () => {
    return new Promise((resolve, reject) => {
      const req = request(
        `${url}/v1/completions`,
        { method: "POST", agent: false, headers: { "content-type": "application/json" } },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            text += chunk;
          });
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: text, close: res.headers.connection === "close" }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify(body));
    });
  });
}

describe("frontend drain", () => {
  const runtimes: DistributedRuntime[] = [];

  afterAll(async () => {
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  it("frontend drain - a new connection during the grace gets a 503 shutting_down, in flight requests finish", async () => {
    const store = new MemoryDiscoveryStore();
    const runtime = async (): Promise<DistributedRuntime> => {
      const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
      runtimes.push(rt);
      return rt;
    };
    await serveEchoWorker(await runtime(), { namespace: "drain", delayMsPerToken: 5 });
    const frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
    });
    await frontend.models.waitForModel("echo", BOUND_MS);

    // About 1 s of tokens: in flight while the frontend drains.
    const prompt = "word ".repeat(200);
    const inFlight = fetch(`${frontend.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "echo", prompt, max_tokens: 200, stream: true }),
    });
    const stream = await withTimeout("stream starts", BOUND_MS, undefined, () => inFlight);
    const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
    await withTimeout("first event", BOUND_MS, undefined, () => reader.read());
    const closing = frontend.close({ graceMs: 10_000 });

    const refused = await postOnFreshConnection(frontend.url, { model: "echo", prompt: "late" });
    expect(refused.status).toBe(503);
    expect(refused.close).toBe(true);
    expect(JSON.parse(refused.body)).toEqual({
      error: {
        message: "the server is shutting down",
        type: "service_unavailable",
        param: null,
        code: "shutting_down",
      },
    });

    let rest = "";
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await withTimeout("stream continues", BOUND_MS, undefined, () => reader.read());
      if (done) break;
      rest += decoder.decode(value, { stream: true });
    }
    expect(rest).toContain('"finish_reason":"length"');
    expect(rest.trimEnd().endsWith("data: [DONE]")).toBe(true);
    await withTimeout("close", BOUND_MS, undefined, () => closing);
    await expect(fetch(`${frontend.url}/live`)).rejects.toThrow();
  });
});
