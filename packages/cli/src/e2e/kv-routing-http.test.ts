import { tmpdir } from "node:os";
import { join } from "node:path";
import { createEchoEngine } from "@tdist/engine-echo";
import { serveLlamaCppWorker } from "@tdist/engine-llamacpp";
import { serveMockerWorker } from "@tdist/engine-mocker";
import { builtinModelAssets, HttpFrontend, serveModel, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, delay, MemoryDiscoveryStore, MemoryEventBus, withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";

/** Shared with the engine's own tests, so the tiny GGUF model is generated once per machine. */
const TEST_CACHE_DIR = process.env.TDIST_CACHE_DIR || join(tmpdir(), "tdist-test-cache");

/** Three runtimes (two workers, one frontend) sharing a memory discovery store and event bus. */
async function twoWorkersAndAFrontend(): Promise<[DistributedRuntime, DistributedRuntime, DistributedRuntime]> {
  const store = new MemoryDiscoveryStore();
  const bus = new MemoryEventBus();
  const make = () =>
    DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store }, eventPlane: { kind: "memory", bus } });
  return [await make(), await make(), await make()];
}

/** A frontend on an ephemeral port routing with `--router-mode kv`. */
const kvFrontend = (runtime: DistributedRuntime): Promise<HttpFrontend> =>
  HttpFrontend.start({ runtime, createPipeline: TokenizerPipeline.create, port: 0, router: "kv" });

describe("kv routing - through the HTTP frontend", () => {
  it("kv routing - a repeated prompt goes back to the worker holding its blocks, named in the response headers", async () => {
    const runtimes = await twoWorkersAndAFrontend();
    const [w1, w2, fe] = runtimes;
    const frontend = await (async () => {
      await serveMockerWorker(w1, { namespace: "kvhttp", engine: { speedupRatio: 50 } });
      await serveMockerWorker(w2, { namespace: "kvhttp", engine: { speedupRatio: 50 } });
      return kvFrontend(fe);
    })();
    try {
      await frontend.models.waitForModel("mocker");
      const prompt = "A long shared system prompt that spans several KV blocks. ".repeat(12);
      const post = async () => {
        const response = await fetch(`${frontend.url}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "mocker", prompt, max_tokens: 4 }),
        });
        expect(response.status).toBe(200);
        await response.json();
        return {
          worker: response.headers.get("x-tdist-worker"),
          cached: Number(response.headers.get("x-tdist-cached-blocks")),
        };
      };
      const first = await post();
      expect(first.worker).toMatch(/^[0-9a-f]+$/);
      expect(first.cached).toBe(0);
      // Let the worker's KV events reach the router's indexer.
      let second = await post();
      for (let i = 0; i < 50 && second.cached === 0; i++) {
        await delay(20);
        second = await post();
      }
      expect(second.worker).toBe(first.worker);
      expect(second.cached).toBeGreaterThan(0);
      const metrics = await (await fetch(`${frontend.url}/metrics`)).text();
      expect(metrics).toMatch(/_decisions_total\{[^}]*model="mocker"/);
    } finally {
      await frontend.close();
      await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 200 })));
    }
  });
});

describe("kv routing - busy thresholds", () => {
  it("kv routing - a request finding every worker over its busy threshold is shed with a 503 naming all_workers_busy", async () => {
    const runtimes = await twoWorkersAndAFrontend();
    const [w1, w2, fe] = runtimes;
    // Slow engines: one step takes about half a second, so two requests keep both workers in prefill.
    await serveMockerWorker(w1, { namespace: "kvbusy", engine: { speedupRatio: 0.01 } });
    await serveMockerWorker(w2, { namespace: "kvbusy", engine: { speedupRatio: 0.01 } });
    const frontend = await HttpFrontend.start({
      runtime: fe,
      createPipeline: TokenizerPipeline.create,
      port: 0,
      router: "kv",
      // Busy as soon as any prompt token waits for prefill.
      kvRouter: { busyThresholds: { activePrefillTokens: 0 } },
    });
    try {
      await frontend.models.waitForModel("mocker");
      const post = (prompt: string) =>
        fetch(`${frontend.url}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "mocker", prompt, max_tokens: 2 }),
          signal: AbortSignal.timeout(20_000),
        });
      const first = post("the first request of the test");
      const second = post("a second request, on the other worker");
      // Wait until the router has placed both (its decision counter), not for a fixed time.
      const decisions = async (): Promise<number> => {
        const text = await (await fetch(`${frontend.url}/metrics`)).text();
        return Number(/_decisions_total\{[^}]*model="mocker"[^}]*\} (\d+)/.exec(text)?.[1] ?? 0);
      };
      await withTimeout("routing the first two", 10_000, undefined, async () => {
        while ((await decisions()) < 2) await delay(10);
      });
      const shed = await post("a third request, while both are busy");
      expect(shed.status).toBe(503);
      const body = (await shed.json()) as { error: { code: string; type: string; message: string } };
      expect(body.error).toMatchObject({ code: "all_workers_busy", type: "service_unavailable" });
      expect(body.error.message).toMatch(/busy/);
      const served = await Promise.all([first, second]);
      expect(served.map((response) => response.status)).toEqual([200, 200]);
      await Promise.all(served.map((response) => response.json()));
      // Once their prefills are done the workers take requests again.
      const after = await post("a fourth request, after the others");
      expect(after.status).toBe(200);
      await after.json();
    } finally {
      await frontend.close();
      await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 200 })));
    }
  }, 30_000);
});

describe("kv routing - llama.cpp workers", () => {
  it("kv routing - llama.cpp workers' KV events send a returning conversation back to the worker holding it", async () => {
    const runtimes = await twoWorkersAndAFrontend();
    const [w1, w2, fe] = runtimes;
    const workers = await withTimeout("starting two llama.cpp workers", 90_000, undefined, () =>
      Promise.all(
        [w1, w2].map((rt) =>
          serveLlamaCppWorker(rt, {
            namespace: "kvllama",
            cacheDir: TEST_CACHE_DIR,
            engine: { sequences: 2, contextSize: 512 },
          }),
        ),
      ),
    );
    const frontend = await kvFrontend(fe);
    try {
      await frontend.models.waitForModel("tdist-tiny-random", 30_000);
      const system = "You are a terse assistant that answers in one short sentence. ".repeat(8);
      const post = (prompt: string) =>
        withTimeout("a completion", 20_000, undefined, async () => {
          const response = await fetch(`${frontend.url}/v1/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: "tdist-tiny-random", prompt, max_tokens: 8, temperature: 0 }),
          });
          expect(response.status).toBe(200);
          const body = (await response.json()) as {
            choices: { text: string }[];
            usage: { prompt_tokens_details?: { cached_tokens?: number } };
          };
          return {
            worker: response.headers.get("x-tdist-worker"),
            cachedBlocks: Number(response.headers.get("x-tdist-cached-blocks")),
            text: body.choices[0]?.text ?? "",
            engineCached: body.usage.prompt_tokens_details?.cached_tokens ?? 0,
          };
        });
      const first = await post(`${system}\nUser: hello\nAssistant:`);
      expect(first.cachedBlocks).toBe(0);
      const ids = workers.map((worker) => worker.instanceId);
      expect(ids).toContain(first.worker);
      // The next turn extends the first one's prompt and reply; let the worker's events reach the router.
      const history = `${system}\nUser: hello\nAssistant:${first.text}`;
      let turn = 0;
      let second = await post(`${history}\nUser: and then? ${turn}\nAssistant:`);
      while (second.cachedBlocks === 0 && turn < 50) {
        await delay(20);
        second = await post(`${history}\nUser: and then? ${++turn}\nAssistant:`);
      }
      expect(second.worker).toBe(first.worker);
      // The shared system prompt alone is about 100 tokens: at least 6 blocks of 16.
      expect(second.cachedBlocks).toBeGreaterThanOrEqual(6);
      // The engine found what the router expected: llama.cpp reused the sequence's cached prefix.
      expect(second.engineCached).toBeGreaterThanOrEqual(second.cachedBlocks * 16);
    } finally {
      await frontend.close();
      await Promise.all(workers.map((worker) => worker.stop({ graceMs: 500 })));
      await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 200 })));
    }
  }, 120_000);
});

describe("kv routing - per-request overrides", () => {
  it("kv routing - nvext.router_config_override reaches the router as annotations; bad values are 400s naming the field", async () => {
    const store = new MemoryDiscoveryStore();
    const make = () => DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    const worker = await make();
    const fe = await make();
    const seen: (Record<string, string> | undefined)[] = [];
    const echo = createEchoEngine();
    const assets = builtinModelAssets();
    await serveModel(worker, {
      namespace: "kvover",
      tokenizerJson: assets.tokenizerJson,
      engine: (request, ctx) => {
        seen.push(request.annotations);
        return echo(request, ctx);
      },
      card: { name: "echo", engine: "echo", ...assets.cardFields, kvBlockSize: 16, limits: {} },
    });
    const frontend = await kvFrontend(fe);
    try {
      await frontend.models.waitForModel("echo");
      const post = (nvext: unknown) =>
        fetch(`${frontend.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "echo", messages: [{ role: "user", content: "hi" }], max_tokens: 2, nvext }),
        });
      const ok = await post({ router_config_override: { overlap_score_weight: 0, router_temperature: 0.5 } });
      expect(ok.status).toBe(200);
      await ok.json();
      expect(seen.at(-1)).toMatchObject({ router_overlap_weight: "0", router_temperature: "0.5" });
      const plain = await post(undefined);
      await plain.json();
      expect(seen.at(-1)?.router_overlap_weight).toBeUndefined();

      const bad = await post({ router_config_override: { overlap_score_weight: -1 } });
      expect(bad.status).toBe(400);
      const error = (await bad.json()) as { error: { param: string; type: string } };
      expect(error.error.type).toBe("invalid_request_error");
      expect(error.error.param).toBe("nvext.router_config_override.overlap_score_weight");
    } finally {
      await frontend.close();
      await Promise.all([worker, fe].map((rt) => rt.shutdown({ graceMs: 200 })));
    }
  });
});
