import { serveMockerWorker } from "@tdist/engine-mocker";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
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
