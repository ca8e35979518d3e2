import { createEchoEngine } from "@tdist/engine-echo";
import { serveMockerWorker } from "@tdist/engine-mocker";
import { builtinModelAssets, HttpFrontend, serveModel, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, delay, MemoryDiscoveryStore, MemoryEventBus } from "@tdist/runtime";
import { describe, expect, it } from "vitest";

describe("kv routing - through the HTTP frontend", () => {
  it("kv routing - a repeated prompt goes back to the worker holding its blocks, named in the response headers", async () => {
    const store = new MemoryDiscoveryStore();
    const bus = new MemoryEventBus();
    const make = () =>
      DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store }, eventPlane: { kind: "memory", bus } });
    const runtimes = [await make(), await make(), await make()];
    const [w1, w2, fe] = runtimes as [DistributedRuntime, DistributedRuntime, DistributedRuntime];
    const frontend = await (async () => {
      await serveMockerWorker(w1, { namespace: "kvhttp", engine: { speedupRatio: 50 } });
      await serveMockerWorker(w2, { namespace: "kvhttp", engine: { speedupRatio: 50 } });
      return HttpFrontend.start({ runtime: fe, createPipeline: TokenizerPipeline.create, port: 0, router: "kv" });
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
    const frontend = await HttpFrontend.start({
      runtime: fe,
      createPipeline: TokenizerPipeline.create,
      port: 0,
      router: "kv",
    });
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
