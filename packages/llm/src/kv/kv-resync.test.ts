import { MemoryEventBus, MemoryEventPlane, withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { KvIndexer } from "../kv-router/kv-indexer.js";
import { computeBlockHashes } from "./block-hash.js";
import type { KvCacheEventData } from "./kv-events.js";
import { answerKvResyncRequests, type HeldBlock, kvResyncSubject, resyncEvents } from "./kv-resync.js";

/** The held blocks of some token sequences (shared prefixes appear once). */
function held(...sequences: number[][]): HeldBlock[] {
  const seen = new Map<string, HeldBlock>();
  for (const tokens of sequences) {
    computeBlockHashes(tokens, 4).forEach((block, b, blocks) => {
      seen.set(block.blockHash, { parentHash: b === 0 ? null : (blocks[b - 1]?.blockHash ?? null), block });
    });
  }
  return [...seen.values()];
}

const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

describe("kv resync", () => {
  it("kv resync - resync events rebuild a worker's view: cleared, then runs with parents first", () => {
    const shared = range(0, 8);
    const sequences = [
      [...shared, ...range(100, 12)],
      [...shared, ...range(200, 4)],
      [...shared, ...range(100, 4), ...range(300, 8)],
      range(900, 8),
    ];
    // Children listed before their parents: the events must still come parents first.
    const blocks = held(...sequences).reverse();
    const events = resyncEvents(blocks);
    expect(events[0]).toEqual({ type: "cleared" });
    const stored = events.slice(1) as Extract<KvCacheEventData, { type: "stored" }>[];
    expect(stored.every((event) => event.type === "stored")).toBe(true);
    expect(stored.flatMap((event) => event.blocks)).toHaveLength(blocks.length);
    // Fewer events than blocks: chains go as runs.
    expect(stored.length).toBeLessThan(blocks.length / 2);

    const indexer = new KvIndexer({ blockSize: 4 });
    // A stale view first: the resync's `cleared` must wipe it.
    indexer.applyEvent({
      workerId: "w",
      eventId: 0,
      data: { type: "stored", parentHash: null, blocks: held(range(500, 4)).map((h) => h.block) },
    });
    events.forEach((data, i) => {
      indexer.applyEvent({ workerId: "w", eventId: i + 1, data });
    });
    for (const tokens of sequences) expect(indexer.findMatches(tokens).scores.get("w")).toBe(tokens.length / 4);
    expect(indexer.findMatches(range(500, 4)).scores.get("w")).toBeUndefined();
    expect(indexer.stats().blocks).toBe(blocks.length);
    expect(indexer.workerState("w")?.resyncing).toBe(false);
  });

  it("kv resync - blocks whose parent is not held are left out", () => {
    const [first, second] = held(range(0, 8));
    const events = resyncEvents([second as HeldBlock]);
    expect(events).toEqual([{ type: "cleared" }]);
    expect(resyncEvents([first as HeldBlock])).toHaveLength(2);
  });

  it("kv resync - a worker answers requests naming it, one at a time, until its signal aborts", async () => {
    const plane = new MemoryEventPlane({ bus: new MemoryEventBus() });
    const controller = new AbortController();
    let calls = 0;
    let release: () => void = () => {};
    const answering = await answerKvResyncRequests({
      plane,
      namespace: "rs",
      workerId: "w1",
      signal: controller.signal,
      resync: () => {
        calls++;
        return new Promise<void>((resolve) => {
          release = resolve;
        });
      },
    });
    await plane.publish(kvResyncSubject("rs"), { workerId: "w2" });
    await plane.publish(kvResyncSubject("rs"), { workerId: "w1", expectedEventId: 3, receivedEventId: 9 });
    // A second request while the first resync runs is answered by it.
    await plane.publish(kvResyncSubject("rs"), { workerId: "w1" });
    await withTimeout("the resync call", 2_000, undefined, async () => {
      while (calls === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(calls).toBe(1);
    release();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await plane.publish(kvResyncSubject("rs"), { workerId: "w1" });
    await withTimeout("the second resync call", 2_000, undefined, async () => {
      while (calls === 1) await new Promise((resolve) => setTimeout(resolve, 2));
    });
    release();
    controller.abort();
    await withTimeout("the answering loop to end", 2_000, undefined, () => answering.done);
    await plane.close();
  });
});
