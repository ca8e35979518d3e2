/**
 * Malformed KV events on the event plane, interleaved with the real events
 * of two mocker workers: the router never stops following, its index ends
 * exactly as one fed only the workers' events, it routes by them, every bad
 * event is counted in `tdist_router_kv_malformed_events_total`, and the
 * warnings are rate-limited per worker.
 */
import {
  createRouterPolicy,
  KV_EVENTS_TOPIC,
  type KvCacheEvent,
  KvIndexer,
  type KvRouter,
  type PreprocessedRequest,
} from "@tdist/llm";
import {
  Context,
  type EventPlane,
  eventSubject,
  type Instance,
  MemoryEventBus,
  MemoryEventPlane,
  mulberry32,
  NatsEventPlane,
  withTimeout,
} from "@tdist/runtime";
import { type NatsServer, startNats, type WarnLine, warnRecorder } from "@tdist/testkit";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { VirtualClock } from "./mocker-clock.js";
import { MockerEngine } from "./mocker-engine.js";

const NS = "kvfuzz";
const COMPONENT = "backend";
const BLOCK = 4;
const SEED = 0x6b766675;
const MALFORMED_WARNING = "ignoring malformed KV events";

const instance = (instanceId: string): Instance => ({
  instanceId,
  namespace: NS,
  component: COMPONENT,
  endpoint: "generate",
  transport: { tcp: "127.0.0.1:0" },
  metadata: {},
  registeredAt: 0,
});

const request = (tokenIds: number[]): PreprocessedRequest => ({
  model: "mock",
  tokenIds,
  sampling: {},
  stop: { maxTokens: 2 },
  eosTokenIds: [],
  output: {},
});

/** Seeded malformed KV events: invented ones and mutations of real ones, each broken in one place. */
class MalformedKvEvents {
  constructor(private readonly next: () => number) {}

  private int(n: number): number {
    return Math.floor(this.next() * n);
  }

  private pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  private badHash(): unknown {
    return this.pick<unknown>([
      "zz",
      "ABCDEF",
      "0123456789abcdef0",
      "",
      " 1a",
      "-1",
      "0x1f",
      42,
      null,
      { blockHash: "1" },
      "é",
    ]);
  }

  /** One malformed payload; `real` is a recent real event to mutate (undefined: invent one). */
  event(real: KvCacheEvent | undefined): unknown {
    const base: KvCacheEvent = real ?? {
      workerId: "w1",
      eventId: this.int(50),
      data: { type: "stored", parentHash: null, blocks: [{ blockHash: "1a", tokensHash: "1a" }] },
    };
    const copy = JSON.parse(JSON.stringify(base)) as Record<string, unknown> & { data: Record<string, unknown> };
    switch (this.int(16)) {
      case 0:
        return this.pick<unknown>([null, 42, "stored", [], [copy], true, -1]);
      case 1:
        delete (copy as Partial<typeof copy>).workerId;
        return copy;
      case 2:
        copy.workerId = this.pick<unknown>([7, "", null, ["w1"], { id: "w1" }, "w".repeat(10_000)]);
        return copy;
      case 3:
        copy.eventId = this.pick<unknown>([-1, 1.5, "3", null, 2 ** 60, -0.5, undefined, [1]]);
        return copy;
      case 4:
        copy.data = this.pick<unknown>([null, "stored", 3, [], undefined]) as Record<string, unknown>;
        return copy;
      case 5:
        copy.data.type = this.pick<unknown>(["evicted", "STORED", "", 1, null, "removed ", "__proto__"]);
        return copy;
      case 6:
        return { ...copy, data: { type: "stored", parentHash: this.badHash(), blocks: [] } };
      case 7:
        return {
          ...copy,
          data: { type: "stored", parentHash: null, blocks: this.pick<unknown>([null, "1a", 5, { 0: "1a" }]) },
        };
      case 8: {
        const blocks = Array.from({ length: 1 + this.int(6) }, (_, i) => ({
          blockHash: (i + 1).toString(16),
          tokensHash: "1",
        }));
        (blocks[this.int(blocks.length)] as { blockHash: unknown }).blockHash = this.badHash();
        return { ...copy, data: { type: "stored", parentHash: null, blocks } };
      }
      case 9:
        return { ...copy, data: { type: "stored", parentHash: null, blocks: [null, "1a"] } };
      case 10:
        // Past the per-event bound: refused whole, never indexed.
        return {
          ...copy,
          data: {
            type: "stored",
            parentHash: null,
            blocks: Array.from({ length: 70_000 }, (_, i) => ({ blockHash: (i + 1).toString(16), tokensHash: "1" })),
          },
        };
      case 11:
        return { ...copy, data: { type: "removed", blockHashes: this.pick<unknown>([null, "1a", [this.badHash()]]) } };
      case 12: {
        let deep: unknown = { type: "stored" };
        for (let i = 0; i < 2_000; i++) deep = { data: deep };
        return { ...copy, data: deep };
      }
      case 13:
        // An own `__proto__` key, as JSON.parse makes it: no prototype may change, and it is still not an event.
        return JSON.parse(
          `{"__proto__":{"polluted":true,"type":"cleared"},"workerId":${JSON.stringify(copy.workerId)},"eventId":${String(copy.eventId)}}`,
        );
      case 14:
        // The other kind's fields missing: a stored event relabelled removed, or the reverse.
        return { ...copy, data: { ...copy.data, type: copy.data.type === "removed" ? "stored" : "removed" } };
      default: {
        const text = "x".repeat(1 + this.int(2_000));
        return {
          workerId: copy.workerId,
          eventId: copy.eventId,
          data: { type: "stored", parentHash: text, blocks: [] },
        };
      }
    }
  }
}

/** Two mocker workers whose KV events go to `publish`, and to a reference indexer in the same order. */
function mockerWorkers(publish: (subject: string, payload: unknown) => Promise<void>, reference: KvIndexer) {
  const published: KvCacheEvent[] = [];
  const engines = ["w1", "w2"].map(
    (workerId) =>
      new MockerEngine({
        workerId,
        blockSize: BLOCK,
        totalKvBlocks: 24,
        clock: new VirtualClock(),
        eventPublisher: {
          async publish(topic, payload) {
            if (topic === KV_EVENTS_TOPIC) {
              const event = JSON.parse(JSON.stringify(payload)) as KvCacheEvent;
              published.push(event);
              reference.applyEvent(event);
            }
            await publish(eventSubject(NS, COMPONENT, topic), payload);
          },
        },
      }),
  );
  const serve = (engine: MockerEngine, tokens: number[]) =>
    withTimeout("generate", 5_000, undefined, async () => {
      for await (const _ of engine.generate(request(tokens), new Context()));
    });
  return { engines, published, serve };
}

/** Prompts that share prefixes (so stored events chain onto parents) and overflow the cache (so blocks are removed). */
function prompts(next: () => number, count: number): number[][] {
  return Array.from({ length: count }, () => {
    const family = Math.floor(next() * 4);
    const length = BLOCK * (2 + Math.floor(next() * 6));
    return Array.from({ length }, (_, i) => (i < BLOCK * 2 ? family * 1000 + i : Math.floor(next() * 50_000)));
  });
}

async function eventually(what: string, check: () => boolean): Promise<void> {
  await withTimeout(what, 5_000, undefined, async () => {
    while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
  });
}

function malformedCount(registry: Registry): number {
  const values = (
    registry.getSingleMetric("tdist_router_kv_malformed_events_total") as unknown as {
      hashMap: Record<string, { value: number; labels: Record<string, string> }>;
    }
  ).hashMap;
  return Object.values(values)
    .filter((entry) => entry.labels.model === "mock")
    .reduce((sum, entry) => sum + entry.value, 0);
}

interface FuzzRun {
  plane: EventPlane;
  /** Publishes what JSON cannot carry as an event: raw bytes, where the plane allows it. */
  publishRaw?: (subject: string, bytes: Uint8Array) => void;
}

async function fuzzRouter(run: FuzzRun, seed: number, rounds: number) {
  const registry = new Registry();
  const warnings: WarnLine[] = [];
  const router = (await createRouterPolicy("kv", {
    blockSize: BLOCK,
    eventPlane: run.plane,
    namespace: NS,
    component: COMPONENT,
    registry,
    modelName: "mock",
    logger: warnRecorder(warnings),
  })) as KvRouter;
  const reference = new KvIndexer({ blockSize: BLOCK });
  for (const workerId of ["w1", "w2"]) {
    router.registerWorker(workerId, { kvBlockSize: BLOCK });
    reference.registerWorker(workerId, { kvBlockSize: BLOCK });
  }
  const next = mulberry32(seed);
  const fuzz = new MalformedKvEvents(next);
  const workers = mockerWorkers((subject, payload) => run.plane.publish(subject, payload), reference);
  const subject = eventSubject(NS, COMPONENT, KV_EVENTS_TOPIC);
  const started = Date.now();
  let bad = 0;
  try {
    for (const tokens of prompts(next, rounds)) {
      await workers.serve(workers.engines[Math.floor(next() * 2)] as MockerEngine, tokens);
      for (let i = Math.floor(next() * 4); i > 0; i--) {
        const real =
          workers.published.length > 0 ? workers.published[Math.floor(next() * workers.published.length)] : undefined;
        try {
          await run.plane.publish(subject, fuzz.event(real));
          bad++;
        } catch (err) {
          // NATS refuses a payload over its max_payload before sending: nothing reached the router.
          if ((err as { code?: string }).code !== "event_plane_error") throw err;
        }
      }
      if (run.publishRaw && next() < 0.5) {
        run.publishRaw(subject, new TextEncoder().encode(next() < 0.5 ? '{"workerId":"w1",' : "\u0000\u00ff not json"));
        bad++;
      }
    }
    await eventually(
      `the router to take in every event (${JSON.stringify(reference.stats())} / ${bad} bad)`,
      () =>
        router.indexer.stats().eventsApplied === reference.stats().eventsApplied &&
        router.indexer.stats().invalidEvents === bad,
    );
    return { router, reference, workers, registry, warnings, bad, elapsedMs: Date.now() - started };
  } catch (err) {
    await router.close();
    throw err;
  } finally {
    for (const engine of workers.engines) await engine.close();
  }
}

/** The index's content: the snapshot without when it was taken or the stream position (the reference has none). */
function contentOf(indexer: KvIndexer): unknown {
  const { streamSequence: _, tree, ...rest } = indexer.snapshot();
  return { ...rest, tree: { ...tree, takenAtMs: 0 } };
}

function expectSameRouting(router: KvRouter, reference: KvIndexer, published: KvCacheEvent[]): void {
  expect(contentOf(router.indexer)).toEqual(contentOf(reference));
  expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
  // The workers' latest stored prefixes are scored as the reference scores them, and routed to.
  const stored = published.filter((event) => event.data.type === "stored").slice(-5);
  expect(stored.length).toBeGreaterThan(0);
  for (const event of stored) {
    if (event.data.type !== "stored") continue;
    const hashes = event.data.blocks.map((block) => block.blockHash);
    expect(router.indexer.findMatchesForHashes(hashes)).toEqual(reference.findMatchesForHashes(hashes));
  }
  const holder = [...reference.tree.workerIds()].find((id) => reference.tree.blockCount(id) > 0);
  expect(holder).toBeDefined();
}

function expectRateLimitedWarnings(warnings: WarnLine[], bad: number, elapsedMs: number): void {
  const lines = warnings.filter((line) => line.message === MALFORMED_WARNING);
  expect(lines.length).toBeGreaterThan(0);
  const counted = lines.reduce((sum, line) => sum + (line.fields.count as number), 0);
  expect(counted).toBeLessThanOrEqual(bad);
  const perSource = new Map<string, number>();
  for (const line of lines)
    perSource.set(String(line.fields.workerId), (perSource.get(String(line.fields.workerId)) ?? 0) + 1);
  // At most one line per source per second (plus the first).
  for (const n of perSource.values()) expect(n).toBeLessThanOrEqual(Math.ceil(elapsedMs / 1_000) + 1);
  expect(lines.length).toBeLessThan(bad);
  for (const line of lines) expect(JSON.stringify(line.fields).length).toBeLessThan(1_000);
}

describe("mocker KV event fuzz", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("mocker kv event fuzz - on a memory plane malformed events are counted and skipped; the index equals the workers' own", async () => {
    const plane = new MemoryEventPlane({ bus: new MemoryEventBus() });
    cleanups.push(() => plane.close());
    const result = await fuzzRouter({ plane }, SEED, 60);
    cleanups.push(() => result.router.close());
    expect(result.bad).toBeGreaterThan(50);
    expect(result.workers.published.some((event) => event.data.type === "removed")).toBe(true);
    expectSameRouting(result.router, result.reference, result.workers.published);
    expect(malformedCount(result.registry)).toBe(result.bad);
    expectRateLimitedWarnings(result.warnings, result.bad, result.elapsedMs);

    // Still following: a prompt served now is routed to the worker that cached it.
    const prompt = Array.from({ length: BLOCK * 6 }, (_, i) => 90_000 + i);
    const engine = result.workers.engines[0] as MockerEngine;
    const fresh = mockerWorkers((subject, payload) => plane.publish(subject, payload), result.reference);
    const w2 = fresh.engines[1] as MockerEngine;
    cleanups.push(async () => {
      for (const e of fresh.engines) await e.close();
    });
    void engine;
    await fresh.serve(w2, prompt);
    await eventually("the router to see the new prompt", () => {
      const route = result.router.pick([instance("w1"), instance("w2")], {
        inFlight: () => 0,
        request: request(prompt),
        exclude: new Set(),
      });
      route?.release?.({ status: "completed" });
      return route?.decision?.workerId === "w2" && route.decision.cachedBlocks === 6;
    });
  });

  describe("on NATS", () => {
    let nats: NatsServer;
    beforeAll(async () => {
      nats = await startNats();
    });
    afterAll(async () => {
      await nats?.stop();
    });

    it("mocker kv event fuzz - over NATS with JetStream, bytes that are not JSON are counted too and the index equals the workers' own", async () => {
      const plane = await NatsEventPlane.connect({ url: nats.url });
      const raw = await NatsEventPlane.connect({ url: nats.url });
      cleanups.push(async () => {
        await raw.close();
        await plane.close();
      });
      const result = await fuzzRouter(
        { plane, publishRaw: (subject, bytes) => raw.connection.publish(subject, bytes) },
        SEED + 1,
        30,
      );
      cleanups.push(() => result.router.close());
      expect(result.router.indexer.streamSequence).toBeGreaterThan(0);
      expectSameRouting(result.router, result.reference, result.workers.published);
      expect(malformedCount(result.registry)).toBe(result.bad);
      expectRateLimitedWarnings(result.warnings, result.bad, result.elapsedMs);
    });
  });
});
