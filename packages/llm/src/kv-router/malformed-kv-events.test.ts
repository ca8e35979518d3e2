import { type Logger, MemoryEventBus, MemoryEventPlane } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { computeBlockHashes } from "../kv/block-hash.js";
import { MAX_BLOCKS_PER_KV_EVENT } from "../kv/kv-event-validation.js";
import type { KvCacheEvent } from "../kv/kv-events.js";
import { KvIndexer } from "./kv-indexer.js";
import { type ActiveSequenceEvent, ReplicaSync } from "./replica-sync.js";
import { WorkerLoadTracker } from "./worker-load-tracker.js";

const BLOCK = 4;

function warnings(): { logger: Logger; lines: { fields: Record<string, unknown>; message?: string }[] } {
  const lines: { fields: Record<string, unknown>; message?: string }[] = [];
  const ignore = (): void => {};
  const logger: Logger = {
    debug: ignore,
    info: ignore,
    warn: (fields: object, message?: string) => {
      lines.push({ fields: fields as Record<string, unknown>, ...(message === undefined ? {} : { message }) });
    },
    error: ignore,
    child: () => logger,
  };
  return { logger, lines };
}

function stored(workerId: string, eventId: number, seed: number): KvCacheEvent {
  const prompt = Array.from({ length: 2 * BLOCK }, (_, i) => seed * 100 + i);
  return { workerId, eventId, data: { type: "stored", parentHash: null, blocks: computeBlockHashes(prompt, BLOCK) } };
}

async function eventually(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met within 2000 ms");
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

describe("malformed KV events", () => {
  it("malformed kv events - non-hex hashes, unsafe ids and oversized events are refused whole; valid ones still apply", () => {
    const problems: string[] = [];
    const indexer = new KvIndexer({ blockSize: BLOCK, onMalformedEvent: (problem) => problems.push(problem) });
    const good = stored("w1", 0, 1);
    const blocks = (good.data as { blocks: { blockHash: string }[] }).blocks;
    const bad: unknown[] = [
      { ...good, data: { type: "stored", parentHash: null, blocks: [{ blockHash: "XYZ", tokensHash: "1" }] } },
      { ...good, data: { type: "stored", parentHash: "not-hex", blocks } },
      { ...good, data: { type: "removed", blockHashes: ["1", 2] } },
      { ...good, eventId: 2 ** 60 },
      { ...good, workerId: "w".repeat(10_000) },
      {
        ...good,
        data: {
          type: "stored",
          parentHash: null,
          blocks: Array.from({ length: MAX_BLOCKS_PER_KV_EVENT + 1 }, (_, i) => ({ blockHash: (i + 1).toString(16) })),
        },
      },
      { ...good, data: { type: "evicted" } },
      undefined,
    ];
    for (const event of bad) expect(indexer.applyEvent(event)).toBe("invalid");
    expect(indexer.stats()).toMatchObject({ invalidEvents: bad.length, eventsApplied: 0, blocks: 0 });
    expect(problems).toHaveLength(bad.length);
    expect(indexer.applyEvent(good)).toBe("applied");
    expect(indexer.findMatchesForHashes(blocks.map((b) => b.blockHash)).get("w1")).toBe(2);
  });

  it("malformed kv events - warnings are at most one per worker per interval, carrying how many were skipped", () => {
    let now = 0;
    const { logger, lines } = warnings();
    const indexer = new KvIndexer({ blockSize: BLOCK, logger, clock: { now: () => now } });
    const garbage = (workerId: unknown) => ({ workerId, eventId: 1, data: { type: "nope" } });
    for (let i = 0; i < 100; i++) indexer.applyEvent(garbage("w1"));
    for (let i = 0; i < 10; i++) indexer.applyEvent(garbage("w2"));
    indexer.applyEvent(garbage(42));
    expect(lines.map((line) => [line.fields.workerId, line.fields.count])).toEqual([
      ["w1", 1],
      ["w2", 1],
      ["(unknown)", 1],
    ]);
    now = 999;
    indexer.applyEvent(garbage("w1"));
    expect(lines).toHaveLength(3);
    now = 1_000;
    indexer.applyEvent(garbage("w1"));
    expect(lines.at(-1)?.fields).toMatchObject({ workerId: "w1", count: 101, problem: "data.type" });
    // Thousands of invented worker ids cannot grow the warning state past its bound or flood the log.
    for (let i = 0; i < 5_000; i++) indexer.applyEvent(garbage(`x${i}`));
    expect(lines.length).toBeLessThan(1_100);
    expect(indexer.stats().invalidEvents).toBe(5_113);
  });

  it("malformed kv events - load reports with negative or infinite numbers are ignored, valid ones kept", () => {
    const loads = new WorkerLoadTracker();
    const report = {
      workerId: "w1",
      activeSequences: 1,
      waitingSequences: 0,
      activeKvBlocks: 3,
      totalKvBlocks: 10,
      kvUsage: 0.3,
      prefillTokensQueued: 0,
    };
    loads.update(report);
    loads.update({ ...report, totalKvBlocks: JSON.parse("1e999") as number });
    loads.update({ ...report, activeKvBlocks: -5 });
    expect(loads.get("w1")).toEqual(report);
  });

  it("malformed kv events - replica sync skips events whose load is not a finite count and keeps following", async () => {
    const plane = new MemoryEventPlane({ bus: new MemoryEventBus() });
    const sync = new ReplicaSync(plane, "ns", "backend", "me");
    const controller = new AbortController();
    const seen: ActiveSequenceEvent[] = [];
    let throwOnce = true;
    const { done } = await sync.start((event) => {
      if (throwOnce) {
        throwOnce = false;
        throw new Error("applying failed");
      }
      seen.push(event);
    }, controller.signal);
    const add = { type: "add", routerId: "other", requestId: "r", workerId: "w1", blockHashes: ["1"] };
    await plane.publish(sync.subject, { ...add, prefillTokens: 1 });
    await plane.publish(sync.subject, { ...add, prefillTokens: -1 });
    await plane.publish(sync.subject, { ...add, prefillTokens: JSON.parse("1e999") as number });
    await plane.publish(sync.subject, { ...add, prefillTokens: 1, blockHashes: [1] });
    await plane.publish(sync.subject, { ...add, requestId: "r2", prefillTokens: 8 });
    await eventually(() => seen.length === 1);
    expect(seen[0]).toMatchObject({ requestId: "r2", prefillTokens: 8 });
    controller.abort();
    await done;
    await plane.close();
  });
});
