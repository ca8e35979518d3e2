import { describe, expect, it } from "vitest";
import { computeBlockHashes } from "../kv/block-hash.js";
import type { KvCacheEvent, KvCacheEventData } from "../kv/kv-events.js";
import { codeOf } from "../testing/error-code.js";
import { KvIndexer } from "./kv-indexer.js";

const BLOCK = 4;

/** Tokens of `blocks` full blocks, distinct per `seed`. */
function tokens(seed: number, blocks: number): number[] {
  return Array.from({ length: blocks * BLOCK }, (_, i) => seed * 1000 + i);
}

/** A worker that numbers its events like an engine. */
function publisher(workerId: string) {
  let eventId = 0;
  return {
    next(data: KvCacheEventData): KvCacheEvent {
      return { workerId, eventId: eventId++, data };
    },
    skip(n: number): void {
      eventId += n;
    },
    stored(prompt: number[], from = 0): KvCacheEvent {
      const blocks = computeBlockHashes(prompt, BLOCK);
      return this.next({
        type: "stored",
        parentHash: from === 0 ? null : (blocks[from - 1]?.blockHash ?? null),
        blocks: blocks.slice(from),
      });
    },
  };
}

describe("kv-indexer", () => {
  it("kv-indexer - applies stored, removed and cleared events and matches prompts by tokens", () => {
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const w1 = publisher("w1");
    const w2 = publisher("w2");
    const prompt = tokens(1, 6);
    expect(indexer.applyEvent(w1.stored(prompt))).toBe("applied");
    expect(indexer.applyEvent(w2.stored(prompt.slice(0, 3 * BLOCK)))).toBe("applied");
    // A partial trailing block is never hashed: 6 full blocks + 2 tokens match 6.
    expect(Object.fromEntries(indexer.findMatches([...prompt, 1, 2]).scores)).toEqual({ w1: 6, w2: 3 });
    const hashes = computeBlockHashes(prompt, BLOCK).map((b) => b.blockHash);
    indexer.applyEvent(w1.next({ type: "removed", blockHashes: [hashes[4] as string] }));
    expect(indexer.findMatches(prompt).scores.get("w1")).toBe(4);
    indexer.applyEvent(w2.next({ type: "cleared" }));
    expect(Object.fromEntries(indexer.findMatches(prompt).scores)).toEqual({ w1: 4 });
    expect(indexer.stats()).toMatchObject({ eventsApplied: 4, gaps: 0 });
  });

  it("kv-indexer - a gap in a worker's event ids drops its blocks, marks it resyncing and calls onResync", () => {
    const resyncs: unknown[] = [];
    const indexer = new KvIndexer({
      blockSize: BLOCK,
      onResync: (workerId, gap) => resyncs.push({ workerId, ...gap }),
    });
    const w1 = publisher("w1");
    const w2 = publisher("w2");
    const a = tokens(1, 4);
    const b = tokens(2, 4);
    indexer.applyEvent(w1.stored(a));
    indexer.applyEvent(w2.stored(a));
    w1.skip(2); // events 1 and 2 of w1 are lost (say, one removed a's blocks)
    expect(indexer.applyEvent(w1.stored(b))).toBe("gap");
    expect(resyncs).toEqual([{ workerId: "w1", expectedEventId: 1, receivedEventId: 3 }]);
    // No stale block of w1 is scored; what it stored after the gap is.
    expect(Object.fromEntries(indexer.findMatches(a).scores)).toEqual({ w2: 4 });
    expect(indexer.findMatches(b).scores.get("w1")).toBe(4);
    expect(indexer.workerState("w1")).toMatchObject({ lastEventId: 3, gaps: 1, resyncing: true });
    expect(indexer.workerState("w2")).toMatchObject({ resyncing: false, gaps: 0 });
    // A full re-send (cleared, then stored) ends the resync.
    indexer.applyEvent(w1.next({ type: "cleared" }));
    indexer.applyEvent(w1.stored(a));
    expect(indexer.workerState("w1")?.resyncing).toBe(false);
    expect(indexer.findMatches(a).scores.get("w1")).toBe(4);
  });

  it("kv-indexer - duplicates are ignored and event id 0 after later ids means a restart", () => {
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const w1 = publisher("w1");
    const first = w1.stored(tokens(1, 2));
    const second = w1.stored(tokens(2, 2));
    indexer.applyEvent(first);
    indexer.applyEvent(second);
    expect(indexer.applyEvent(first)).toBe("restart");
    // The restart dropped everything; tokens(2) is gone until stored again.
    expect(indexer.findMatches(tokens(2, 2)).scores.size).toBe(0);
    expect(indexer.findMatches(tokens(1, 2)).scores.get("w1")).toBe(2);
    expect(indexer.applyEvent({ ...first, eventId: 0 })).toBe("duplicate");
    expect(indexer.applyEvent(second)).toBe("applied");
    expect(indexer.applyEvent(second)).toBe("duplicate");
    expect(indexer.applyEvent({ workerId: "w1", eventId: 9 } as KvCacheEvent)).toBe("invalid");
    expect(indexer.stats()).toMatchObject({ duplicates: 2, invalidEvents: 1 });
  });

  it("kv-indexer - a worker card with another block size is an invalid_option error at registration", () => {
    const indexer = new KvIndexer({ blockSize: 16 });
    expect(codeOf(() => indexer.registerWorker("w1", { kvBlockSize: 32 }))).toBe("invalid_option");
    expect(codeOf(() => indexer.registerWorker("w1", { kvBlockSize: 16 }))).toBeUndefined();
    expect(indexer.workerState("w1")?.kvBlockSize).toBe(16);
    expect(codeOf(() => new KvIndexer({ blockSize: 0 }))).toBe("invalid_option");
  });

  it("kv-indexer - snapshot and restore round-trip blocks and event ids (a gap across the restart is detected)", () => {
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const w1 = publisher("w1");
    const w2 = publisher("w2");
    indexer.applyEvent(w1.stored(tokens(1, 5)));
    indexer.applyEvent(w2.stored(tokens(1, 2)));
    indexer.applyEvent(w2.stored(tokens(3, 3)));
    indexer.streamSequence = 3;
    const snapshot = JSON.parse(JSON.stringify(indexer.snapshot()));
    const restored = new KvIndexer({ blockSize: BLOCK });
    restored.restore(snapshot);
    for (const prompt of [tokens(1, 5), tokens(3, 3), tokens(9, 1)]) {
      expect(Object.fromEntries(restored.findMatches(prompt).scores)).toEqual(
        Object.fromEntries(indexer.findMatches(prompt).scores),
      );
    }
    expect(restored.streamSequence).toBe(3);
    // w2's next id is 2; one lost while the router was down shows as a gap.
    w2.skip(1);
    expect(restored.applyEvent(w2.stored(tokens(4, 1)))).toBe("gap");
    expect(restored.applyEvent(w1.stored(tokens(5, 1)))).toBe("applied");
    expect(codeOf(() => new KvIndexer({ blockSize: 8 }).restore(snapshot))).toBe("invalid_option");
  });

  it("kv-indexer - follow applies events from an async source until it ends", async () => {
    const indexer = new KvIndexer({ blockSize: BLOCK });
    const w1 = publisher("w1");
    const events = [w1.stored(tokens(1, 2)), w1.stored(tokens(2, 3))];
    async function* source() {
      for (const event of events) yield { subject: "s", payload: event };
    }
    await indexer.follow(source());
    expect(indexer.findMatches(tokens(2, 3)).scores.get("w1")).toBe(3);
  });
});
