import {
  answerKvResyncRequests,
  createRouterPolicy,
  KV_EVENTS_TOPIC,
  type LlmRouter,
  type PreprocessedRequest,
} from "@tdist/llm";
import { Context, eventSubject, type Instance, MemoryEventBus, MemoryEventPlane, withTimeout } from "@tdist/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { VirtualClock } from "./mocker-clock.js";
import { MockerEngine } from "./mocker-engine.js";

const NS = "resync";
const WORKER = "w1";
const instances: Instance[] = [
  {
    instanceId: WORKER,
    namespace: NS,
    component: "backend",
    endpoint: "generate",
    transport: { tcp: "127.0.0.1:0" },
    metadata: {},
    registeredAt: 0,
  },
];

const request = (tokenIds: number[]): PreprocessedRequest => ({
  model: "mock",
  tokenIds,
  sampling: {},
  stop: { maxTokens: 2 },
  eosTokenIds: [],
  output: {},
});

const prompt = (tag: number): number[] => Array.from({ length: 32 }, (_, i) => tag * 1000 + i);

describe("mocker KV resync", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("mocker kv resync - after lost events the router asks for a resync and scores the whole cache again", async () => {
    const plane = new MemoryEventPlane({ bus: new MemoryEventBus() });
    let losing = false;
    const engine = new MockerEngine({
      workerId: WORKER,
      blockSize: 4,
      clock: new VirtualClock(),
      eventPublisher: {
        async publish(topic, payload) {
          if (losing && topic === KV_EVENTS_TOPIC) throw new Error("event lost on the way");
          await plane.publish(eventSubject(NS, "backend", topic), payload);
        },
      },
    });
    const router: LlmRouter = await createRouterPolicy("kv", {
      blockSize: 4,
      eventPlane: plane,
      namespace: NS,
      component: "backend",
      eventHistory: "none",
      modelName: "mock",
    });
    router.registerWorker(WORKER, { kvBlockSize: 4 });
    const controller = new AbortController();
    const answering = await answerKvResyncRequests({
      plane,
      namespace: NS,
      workerId: WORKER,
      resync: () => engine.resyncKvEvents(),
      signal: controller.signal,
    });
    cleanups.push(async () => {
      controller.abort();
      await answering.done;
      await router.close();
      await engine.close();
      await plane.close();
    });

    /** The blocks of `tokens` the router believes the worker holds. */
    const cachedBlocks = (tokens: number[]): number => {
      const route = router.pick(instances, { inFlight: () => 0, request: request(tokens), exclude: new Set() });
      route?.release?.({ status: "completed" });
      return route?.decision?.cachedBlocks ?? -1;
    };
    const serve = (tokens: number[]) =>
      withTimeout("generate", 5_000, undefined, async () => {
        for await (const _ of engine.generate(request(tokens), new Context()));
      });
    const eventually = (what: string, check: () => boolean) =>
      withTimeout(what, 5_000, undefined, async () => {
        while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
      });

    await serve(prompt(1));
    await eventually("the router to see prompt 1", () => cachedBlocks(prompt(1)) === 8);
    // Prompt 2's events are lost; their ids are spent.
    losing = true;
    await serve(prompt(2));
    losing = false;
    expect(cachedBlocks(prompt(2))).toBe(0);
    // The next event shows the gap: the router drops the worker's blocks and asks it to re-send them.
    await serve(prompt(3));
    await eventually("the resync", () => cachedBlocks(prompt(2)) === 8);
    expect(cachedBlocks(prompt(1))).toBe(8);
    expect(cachedBlocks(prompt(3))).toBe(8);
  });
});
