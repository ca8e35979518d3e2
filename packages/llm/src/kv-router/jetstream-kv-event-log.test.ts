import { eventSubject, NatsEventPlane } from "@tdist/runtime";
import { type NatsServer, startNats } from "@tdist/testkit";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { computeBlockHashes } from "../kv/block-hash.js";
import { KV_EVENTS_TOPIC, type KvCacheEvent } from "../kv/kv-events.js";
import { answerKvResyncRequests, type HeldBlock, resyncEvents } from "../kv/kv-resync.js";
import { createRouterPolicy } from "./create-router-policy.js";
import { JetStreamKvEventLog, kvEventStreamName } from "./jetstream-kv-event-log.js";
import type { KvRouter } from "./kv-router.js";

const BLOCK = 4;
const NS = "jstest";
const COMPONENT = "backend";

function tokens(seed: number, blocks: number): number[] {
  return Array.from({ length: blocks * BLOCK }, (_, i) => seed * 1000 + i);
}

function stored(workerId: string, eventId: number, prompt: number[]): KvCacheEvent {
  return { workerId, eventId, data: { type: "stored", parentHash: null, blocks: computeBlockHashes(prompt, BLOCK) } };
}

async function eventually(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let nats: NatsServer;
beforeAll(async () => {
  nats = await startNats();
});
afterAll(async () => {
  await nats?.stop();
});

describe("jetstream-kv-event-log", () => {
  it("jetstream-kv-event-log - a restarted router replays the stream and starts warm; a snapshot resumes after its sequence", async () => {
    const subject = eventSubject(NS, COMPONENT, KV_EVENTS_TOPIC);
    const options = { namespace: NS, component: COMPONENT, blockSize: BLOCK, warmupTimeoutMs: 5_000 };
    await using workers = await NatsEventPlane.connect({ url: nats.url });

    await using planeA = await NatsEventPlane.connect({ url: nats.url });
    const first = (await createRouterPolicy("kv", { ...options, eventPlane: planeA })) as KvRouter;
    await workers.publish(subject, stored("w1", 0, tokens(1, 5)));
    await workers.publish(subject, stored("w2", 0, tokens(2, 3)));
    await eventually(() => first.indexer.streamSequence === 2);
    expect(first.indexer.findMatches(tokens(1, 5)).scores.get("w1")).toBe(5);
    await first.close();

    // A router started after the events were published is warm as soon as it is created.
    await using planeB = await NatsEventPlane.connect({ url: nats.url });
    const second = (await createRouterPolicy("kv", { ...options, eventPlane: planeB })) as KvRouter;
    expect(second.indexer.findMatches(tokens(1, 5)).scores.get("w1")).toBe(5);
    expect(second.indexer.findMatches(tokens(2, 3)).scores.get("w2")).toBe(3);
    const snapshot = second.indexer.snapshot();
    expect(snapshot.streamSequence).toBe(2);
    await second.close();

    // From a snapshot, only the events after its sequence are replayed.
    await workers.publish(subject, stored("w1", 1, tokens(3, 2)));
    await using planeC = await NatsEventPlane.connect({ url: nats.url });
    const third = (await createRouterPolicy("kv", { ...options, eventPlane: planeC, snapshot })) as KvRouter;
    expect(third.indexer.stats().eventsApplied).toBe(1);
    expect(third.indexer.findMatches(tokens(1, 5)).scores.get("w1")).toBe(5);
    expect(third.indexer.findMatches(tokens(3, 2)).scores.get("w1")).toBe(2);
    // Live events keep coming through the same consumer.
    await workers.publish(subject, stored("w3", 0, tokens(4, 1)));
    await eventually(() => third.indexer.findMatches(tokens(4, 1)).scores.get("w3") === 1);
    await third.close();

    const log = await JetStreamKvEventLog.open(workers.connection, { namespace: NS, component: COMPONENT });
    expect(log.stream).toBe(kvEventStreamName(NS, COMPONENT));
    expect(await log.lastSequence()).toBe(4);
  });

  it("jetstream-kv-event-log - over NATS a gap makes the router ask the worker to resync, and its answer restores the blocks", async () => {
    const ns = "jsresync";
    const subject = eventSubject(ns, COMPONENT, KV_EVENTS_TOPIC);
    await using workerPlane = await NatsEventPlane.connect({ url: nats.url });
    await using routerPlane = await NatsEventPlane.connect({ url: nats.url });
    const registry = new Registry();
    const router = (await createRouterPolicy("kv", {
      registry,
      modelName: "m",
      namespace: ns,
      component: COMPONENT,
      blockSize: BLOCK,
      eventPlane: routerPlane,
      warmupTimeoutMs: 5_000,
    })) as KvRouter;
    // The worker holds two prompts; the router gets the first, then an event after two lost ones.
    const held: HeldBlock[] = [tokens(1, 5), tokens(3, 2)].flatMap((prompt) =>
      computeBlockHashes(prompt, BLOCK).map((block, b, blocks) => ({
        parentHash: b === 0 ? null : (blocks[b - 1]?.blockHash ?? null),
        block,
      })),
    );
    let nextEventId = 4;
    const controller = new AbortController();
    const answering = await answerKvResyncRequests({
      plane: workerPlane,
      namespace: ns,
      workerId: "w1",
      signal: controller.signal,
      resync: async () => {
        for (const data of resyncEvents(held))
          await workerPlane.publish(subject, { workerId: "w1", eventId: nextEventId++, data });
      },
    });
    try {
      await workerPlane.publish(subject, stored("w1", 0, tokens(1, 5)));
      await eventually(() => router.indexer.findMatches(tokens(1, 5)).scores.get("w1") === 5);
      await workerPlane.publish(subject, stored("w1", 3, tokens(3, 2)));
      await eventually(() => router.indexer.stats().gaps === 1);
      // The resync answer arrives through the stream: both prompts are scored again, nothing stale.
      await eventually(() => router.indexer.findMatches(tokens(1, 5)).scores.get("w1") === 5);
      await eventually(() => router.indexer.findMatches(tokens(3, 2)).scores.get("w1") === 2);
      expect(router.indexer.workerState("w1")?.resyncing).toBe(false);
      expect(router.indexer.stats().blocks).toBe(7);
      const gaps = await registry.getSingleMetric("tdist_router_kv_event_gaps_total")?.get();
      expect(gaps?.values).toEqual([expect.objectContaining({ value: 1, labels: { model: "m" } })]);
    } finally {
      controller.abort();
      await answering.done;
      await router.close();
    }
  });
});
