import { eventSubject, type Instance, MemoryEventBus, MemoryEventPlane, mulberry32 } from "@tdist/runtime";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { computeBlockHashes } from "../kv/block-hash.js";
import { KV_EVENTS_TOPIC, type KvCacheEvent, LOAD_METRICS_TOPIC, type WorkerLoadMetrics } from "../kv/kv-events.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { codeOf } from "../testing/error-code.js";
import { createRouterPolicy } from "./create-router-policy.js";
import { KvIndexer } from "./kv-indexer.js";
import { KvRouter } from "./kv-router.js";
import type { LlmRouter } from "./llm-router.js";
import { RouterMetrics } from "./router-metrics.js";
import { WorkerLoadTracker } from "./worker-load-tracker.js";

const BLOCK = 4;
const NS = "kvtest";
const COMPONENT = "backend";

function instance(instanceId: string): Instance {
  return {
    instanceId,
    namespace: NS,
    component: COMPONENT,
    endpoint: "generate",
    transport: { tcp: "127.0.0.1:1" },
    metadata: {},
    registeredAt: 0,
  };
}

function request(tokenIds: number[], annotations?: Record<string, string>): PreprocessedRequest {
  return {
    model: "m",
    tokenIds,
    sampling: {},
    stop: { maxTokens: 8 },
    eosTokenIds: [],
    output: {},
    ...(annotations ? { annotations } : {}),
  };
}

function tokens(seed: number, blocks: number): number[] {
  return Array.from({ length: blocks * BLOCK }, (_, i) => seed * 1000 + i);
}

function storedEvent(workerId: string, eventId: number, prompt: number[]): KvCacheEvent {
  return { workerId, eventId, data: { type: "stored", parentHash: null, blocks: computeBlockHashes(prompt, BLOCK) } };
}

const NO_EXCLUSIONS: ReadonlySet<string> = new Set();

const routeWith = (router: LlmRouter, ids: string[], req: PreprocessedRequest, inFlight = (_id: string) => 0) =>
  router.pick(ids.map(instance), { inFlight, request: req, exclude: NO_EXCLUSIONS });

const pickWith = (router: LlmRouter, ids: string[], req: PreprocessedRequest, inFlight = (_id: string) => 0) =>
  routeWith(router, ids, req, inFlight)?.instance.instanceId;

const COMPLETED = { status: "completed" } as const;

/** Polls `check` until it holds; bounded. */
async function eventually(check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const toClose: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(toClose.splice(0).map((c) => c.close()));
});

describe("kv-router", () => {
  it("kv-router - routes to the worker holding the prompt's prefix", () => {
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const router = new KvRouter({ blockSize: BLOCK, indexer, rng: mulberry32(1) });
    indexer.applyEvent(storedEvent("w2", 0, tokens(1, 8)));
    const req = request([...tokens(1, 8), 5, 6], { request_id: "r1" });
    const route = routeWith(router, ["w1", "w2", "w3"], req);
    expect(route?.instance.instanceId).toBe("w2");
    expect(route?.decision).toMatchObject({
      requestId: "r1",
      workerId: "w2",
      cachedBlocks: 8,
      requestBlocks: 8,
      policy: "kv",
    });
  });

  it("kv-router - predicted load follows the route: picked, first response, released", () => {
    const router = new KvRouter({ blockSize: BLOCK, rng: mulberry32(2) });
    const route = routeWith(router, ["w1", "w2"], request(tokens(1, 5), { request_id: "a" }));
    const worker = route?.instance.instanceId as string;
    expect(router.active.load(worker)).toEqual({ prefillTokens: 20, decodeBlocks: 6, requests: 1 });
    // Another request now goes to the idle worker.
    const other = routeWith(router, ["w1", "w2"], request(tokens(2, 5), { request_id: "b" }));
    expect(other?.instance.instanceId).not.toBe(worker);
    route?.onFirstResponse?.();
    expect(router.active.load(worker).prefillTokens).toBe(0);
    route?.release?.(COMPLETED);
    route?.release?.(COMPLETED);
    expect(router.active.load(worker)).toEqual({ prefillTokens: 0, decodeBlocks: 0, requests: 0 });
    // The other request's route still holds its load until it is released, however it ended.
    expect(router.active.load(other?.instance.instanceId as string).requests).toBe(1);
    other?.release?.({ status: "cancelled" });
    expect(router.active.size).toBe(0);
  });

  it("kv-router - two requests with the same prompt hold separate loads", () => {
    const router = new KvRouter({ blockSize: BLOCK, rng: mulberry32(2) });
    // Without a request_id annotation the router names each request itself.
    const first = routeWith(router, ["w1"], request(tokens(3, 2)));
    const second = routeWith(router, ["w1"], request(tokens(3, 2)));
    expect(first?.decision?.requestId).not.toBe(second?.decision?.requestId);
    expect(router.active.load("w1").requests).toBe(2);
    first?.release?.(COMPLETED);
    expect(router.active.load("w1").requests).toBe(1);
    second?.release?.(COMPLETED);
    expect(router.active.load("w1").requests).toBe(0);
  });

  it("kv-router - shared prefixes of active requests count once in decode blocks", () => {
    const router = new KvRouter({ blockSize: BLOCK, rng: mulberry32(3) });
    const prefix = tokens(1, 6);
    pickWith(router, ["w1"], request([...prefix, ...tokens(2, 1)], { request_id: "a" }));
    pickWith(router, ["w1"], request([...prefix, ...tokens(3, 1)], { request_id: "b" }));
    // 6 shared + 2 distinct blocks, + 1 partial per request.
    expect(router.active.load("w1").decodeBlocks).toBe(10);
  });

  it("kv-router - per-request annotations override the overlap weight and are validated", () => {
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const router = new KvRouter({ blockSize: BLOCK, indexer, rng: mulberry32(4) });
    indexer.applyEvent(storedEvent("cached", 0, tokens(1, 8)));
    // Make the cached worker busier than the idle one.
    for (let i = 0; i < 2; i++)
      router.active.add({ key: `x/${i}`, workerId: "cached", blockHashes: [`h${i}`], prefillTokens: 0, addedAt: 0 });
    const ids = ["cached", "idle"];
    expect(pickWith(router, ids, request(tokens(1, 8), { request_id: "a" }))).toBe("cached");
    expect(pickWith(router, ids, request(tokens(1, 8), { request_id: "b", router_overlap_weight: "0" }))).toBe("idle");
    expect(codeOf(() => pickWith(router, ids, request(tokens(1, 8), { router_temperature: "hot" })))).toBe(
      "bad_request",
    );
    expect(
      codeOf(() =>
        router.pick([instance("w1")], { inFlight: () => 0, request: { text: "x" }, exclude: NO_EXCLUSIONS }),
      ),
    ).toBe("bad_request");
  });

  it("kv-router - a worker whose card has another block size is refused and never routed to", () => {
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const router = new KvRouter({ blockSize: BLOCK, indexer, rng: mulberry32(5) });
    indexer.applyEvent(storedEvent("bad", 0, tokens(1, 8)));
    expect(codeOf(() => router.registerWorker("bad", { kvBlockSize: BLOCK * 2 }))).toBe("invalid_option");
    router.registerWorker("good", { kvBlockSize: BLOCK });
    for (let i = 0; i < 10; i++) expect(pickWith(router, ["bad", "good"], request(tokens(1, 8)))).toBe("good");
    expect(pickWith(router, ["bad"], request(tokens(1, 8)))).toBeUndefined();
  });

  it("kv-router - approximate mode predicts cache from its own decisions and forgets them after the TTL", async () => {
    let now = 0;
    const clock = { now: () => now };
    const router = await createRouterPolicy("kv-approx", {
      blockSize: BLOCK,
      clock,
      rng: mulberry32(6),
      kv: { approxTtlMs: 1_000 },
    });
    toClose.push(router);
    const prompt = tokens(1, 8);
    const a = routeWith(router, ["w1", "w2", "w3"], request(prompt, { request_id: "a" }));
    const first = a?.instance.instanceId as string;
    a?.release?.(COMPLETED);
    now = 500;
    // Same prefix, new suffix: the predicted cache wins.
    const b = routeWith(router, ["w1", "w2", "w3"], request([...prompt, ...tokens(2, 2)], { request_id: "b" }));
    expect(b?.instance.instanceId).toBe(first);
    expect(b?.decision?.cachedBlocks).toBe(8);
    b?.release?.(COMPLETED);
    // Touched at 500: still there at 1 400, gone after 1 500.
    now = 1_400;
    pickWith(router, ["w1", "w2", "w3"], request(tokens(3, 1), { request_id: "c" }));
    expect((router as KvRouter).indexer.findMatchesForHashes(hashes(prompt)).get(first)).toBe(8);
    now = 1_600;
    expect((router as KvRouter).indexer.findMatchesForHashes(hashes(prompt)).size).toBe(0);
  });

  it("kv-router - follows KV events on the event plane and a later router starts warm from the history", async () => {
    const bus = new MemoryEventBus();
    const plane = new MemoryEventPlane({ bus });
    toClose.push(plane);
    const options = {
      eventPlane: plane,
      namespace: NS,
      component: COMPONENT,
      blockSize: BLOCK,
      rng: mulberry32(7),
      kv: { busyThresholds: { activeDecodeBlocks: 0.9 } },
    };
    const first = (await createRouterPolicy("kv", options)) as KvRouter;
    toClose.push(first);
    await plane.publish(eventSubject(NS, COMPONENT, KV_EVENTS_TOPIC), storedEvent("w3", 0, tokens(1, 6)));
    await eventually(() => first.indexer.findMatches(tokens(1, 6)).scores.get("w3") === 6);
    expect(pickWith(first, ["w1", "w2", "w3"], request(tokens(1, 6)))).toBe("w3");
    // A router created now replays the in-process history before serving.
    const second = (await createRouterPolicy("kv", options)) as KvRouter;
    toClose.push(second);
    expect(second.indexer.findMatches(tokens(1, 6)).scores.get("w3")).toBe(6);
    // And engine-reported load marks a worker busy: w3 reports a full cache of active blocks.
    const metrics: WorkerLoadMetrics = {
      workerId: "w3",
      activeSequences: 50,
      waitingSequences: 10,
      activeKvBlocks: 1_000,
      totalKvBlocks: 1_000,
      kvUsage: 1,
      prefillTokensQueued: 10_000,
    };
    await plane.publish(eventSubject(NS, COMPONENT, LOAD_METRICS_TOPIC), metrics);
    await eventually(() => pickWith(second, ["w1", "w3"], request(tokens(1, 6))) === "w1");
  });

  it("kv-router - a lagging load report does not hide requests routed since it", () => {
    const loads = new WorkerLoadTracker();
    const report = (workerId: string, activeKvBlocks: number): void =>
      loads.update({
        workerId,
        activeSequences: 1,
        waitingSequences: 0,
        activeKvBlocks,
        totalKvBlocks: 1_000,
        kvUsage: activeKvBlocks / 1_000,
        prefillTokensQueued: 0,
      });
    // Reports from the last engine step; none arrives during the burst.
    report("w1", 50);
    report("w2", 40);
    const router = new KvRouter({ blockSize: BLOCK, loads, rng: mulberry32(3) });
    const counts = new Map<string, number>();
    for (let i = 0; i < 6; i++) {
      const route = routeWith(router, ["w1", "w2"], request(tokens(10 + i, 8), { request_id: `b${i}` }));
      const chosen = route?.instance.instanceId as string;
      counts.set(chosen, (counts.get(chosen) ?? 0) + 1);
      // Short prompts: each reaches its first token before the next arrives, so only decode load remains.
      route?.onFirstResponse?.();
    }
    // Taking the larger of report and prediction sent all six to w2: the report hid its first five.
    expect(counts.get("w1")).toBe(3);
    expect(counts.get("w2")).toBe(3);
  });

  it("kv-router - two router replicas share active sequences and do not pile onto one worker", async () => {
    const bus = new MemoryEventBus();
    const planeA = new MemoryEventPlane({ bus });
    const planeB = new MemoryEventPlane({ bus });
    toClose.push(planeA, planeB);
    const common = { namespace: NS, component: COMPONENT, blockSize: BLOCK, replicaSync: true };
    const a = (await createRouterPolicy("kv", { ...common, eventPlane: planeA, rng: mulberry32(8) })) as KvRouter;
    const b = (await createRouterPolicy("kv", { ...common, eventPlane: planeB, rng: mulberry32(9) })) as KvRouter;
    toClose.push(a, b);
    const ids = ["w1", "w2"];
    const routeOfA = routeWith(a, ids, request(tokens(1, 8), { request_id: "r1" }));
    const chosenByA = routeOfA?.instance.instanceId as string;
    await eventually(() => b.active.load(chosenByA).requests === 1);
    expect(b.active.load(chosenByA)).toEqual(a.active.load(chosenByA));
    // B sees A's request: the same-sized request goes to the other worker, every time.
    const chosenByB = pickWith(b, ids, request(tokens(2, 8), { request_id: "r2" }));
    expect(chosenByB).not.toBe(chosenByA);
    routeOfA?.onFirstResponse?.();
    await eventually(() => b.active.load(chosenByA).prefillTokens === 0);
    routeOfA?.release?.(COMPLETED);
    await eventually(() => b.active.load(chosenByA).requests === 0);
    // Request ids are per router: B reusing "r1" is a different request to A.
    expect(a.active.size).toBe(1); // B's r2
    pickWith(b, ids, request(tokens(3, 1), { request_id: "r1" }));
    await eventually(() => a.active.size === 2);
  });

  it("kv-router - metrics count decisions, overlap and predicted load in the given registry", async () => {
    const registry = new Registry();
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const metrics = RouterMetrics.forRegistry(registry);
    expect(RouterMetrics.forRegistry(registry)).toBe(metrics);
    const router = new KvRouter({ blockSize: BLOCK, indexer, metrics, modelName: "m1", rng: mulberry32(10) });
    indexer.applyEvent(storedEvent("w1", 0, tokens(1, 4)));
    pickWith(router, ["w1"], request(tokens(1, 8), { request_id: "a" }));
    const text = await registry.metrics();
    expect(text).toContain('tdist_router_decisions_total{model="m1",policy="kv"} 1');
    expect(text).toContain('tdist_router_kv_request_blocks_total{model="m1"} 8');
    expect(text).toContain('tdist_router_kv_overlap_blocks_total{model="m1"} 4');
    expect(text).toContain('tdist_router_worker_predicted_prefill_tokens{model="m1",worker="w1"} 16');
    expect(text).toContain("tdist_router_decision_seconds_bucket");
    await router.close();
    expect(await registry.metrics()).not.toContain('worker="w1"');
  });

  it("kv-router - createRouterPolicy validates the mode and the options", async () => {
    await expect(createRouterPolicy("nope" as never, { blockSize: 4 })).rejects.toMatchObject({
      code: "invalid_option",
    });
    await expect(createRouterPolicy("kv", { blockSize: 4 })).rejects.toMatchObject({ code: "invalid_option" });
    await expect(createRouterPolicy("round-robin", { blockSize: 0 })).rejects.toMatchObject({ code: "invalid_option" });
    const rr = await createRouterPolicy("round-robin", { blockSize: 4 });
    expect(["w1", "w2", "w1"].map(() => pickWith(rr, ["w1", "w2"], request(tokens(1, 1))))).toEqual(["w1", "w2", "w1"]);
    rr.registerWorker("w1", { kvBlockSize: 64 });
  });
});

function hashes(prompt: number[]): string[] {
  return computeBlockHashes(prompt, BLOCK).map((b) => b.blockHash);
}
