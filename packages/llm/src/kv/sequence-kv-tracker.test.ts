import { describe, expect, it } from "vitest";
import { KvIndexer } from "../kv-router/kv-indexer.js";
import { computeBlockHashes } from "./block-hash.js";
import type { KvCacheEventData } from "./kv-events.js";
import { SequenceKvTracker } from "./sequence-kv-tracker.js";

const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);
const hashes = (tokens: number[]): string[] => computeBlockHashes(tokens, 4).map((block) => block.blockHash);

describe("SequenceKvTracker", () => {
  it("sequence kv tracker - stores a sequence's full blocks once, with the router's hashes", () => {
    const tracker = new SequenceKvTracker(4);
    const prompt = range(100, 10);
    expect(tracker.update(0, 0, prompt)).toEqual([
      { type: "stored", parentHash: null, blocks: computeBlockHashes(prompt, 4) },
    ]);
    // Two more tokens complete the third block: one stored event, child of the second.
    const more = tracker.update(0, 10, [110, 111]);
    const all = hashes([...prompt, 110, 111]);
    expect(more).toEqual([
      { type: "stored", parentHash: all[1], blocks: [expect.objectContaining({ blockHash: all[2] })] },
    ]);
    expect(tracker.update(0, 12, [112])).toEqual([]);
    expect(tracker.heldBlocks).toBe(3);
    expect(tracker.tokens(0)).toEqual([...prompt, 110, 111, 112]);
  });

  it("sequence kv tracker - a sequence reused for another prompt removes the blocks past the shared prefix", () => {
    const tracker = new SequenceKvTracker(4);
    const first = range(0, 12);
    tracker.update(0, 0, first);
    const second = [...range(0, 6), ...range(50, 6)];
    const events = tracker.update(0, 6, second.slice(6));
    const old = hashes(first);
    const now = hashes(second);
    expect(events).toEqual([
      { type: "removed", blockHashes: [old[1], old[2]] },
      { type: "stored", parentHash: now[0], blocks: computeBlockHashes(second, 4).slice(1) },
    ]);
  });

  it("sequence kv tracker - a block two sequences hold is stored once and removed when the last lets go", () => {
    const tracker = new SequenceKvTracker(4);
    const system = range(0, 8);
    tracker.update(0, 0, [...system, 1, 2, 3, 4]);
    const [shared0, shared1] = hashes(system);
    // The second sequence shares the first two blocks: only its own third block is new.
    const second = tracker.update(1, 0, [...system, 9, 9, 9, 9]);
    expect(second).toEqual([
      { type: "stored", parentHash: shared1, blocks: computeBlockHashes([...system, 9, 9, 9, 9], 4).slice(2) },
    ]);
    expect(tracker.heldBlocks).toBe(4);
    // Sequence 0 drops everything: its own block goes, the shared ones stay (sequence 1 holds them).
    expect(tracker.update(0, 0, [])).toEqual([{ type: "removed", blockHashes: [hashes([...system, 1, 2, 3, 4])[2]] }]);
    const last = tracker.update(1, 0, []);
    expect(last).toEqual([{ type: "removed", blockHashes: [shared0, shared1, hashes([...system, 9, 9, 9, 9])[2]] }]);
    expect(tracker.heldBlocks).toBe(0);
  });

  it("sequence kv tracker - rewriting the same tokens after keep changes nothing", () => {
    const tracker = new SequenceKvTracker(4);
    const tokens = range(0, 9);
    tracker.update(0, 0, tokens);
    expect(tracker.update(0, 5, tokens.slice(5))).toEqual([]);
    expect(tracker.heldBlocks).toBe(2);
  });

  it("sequence kv tracker - stored runs resume after blocks another sequence holds", () => {
    const tracker = new SequenceKvTracker(4);
    tracker.update(1, 0, range(0, 8));
    // Sequence 0 first holds something else, then switches to a prompt extending sequence 1's.
    tracker.update(0, 0, range(200, 4));
    const events = tracker.update(0, 0, range(0, 12));
    const now = hashes(range(0, 12));
    expect(events).toEqual([
      { type: "removed", blockHashes: hashes(range(200, 4)) },
      { type: "stored", parentHash: now[1], blocks: [expect.objectContaining({ blockHash: now[2] })] },
    ]);
  });

  it("sequence kv tracker - a keep past what the sequence holds is a bad_request; clear forgets everything", () => {
    const tracker = new SequenceKvTracker(4);
    tracker.update(0, 0, range(0, 5));
    expect(() => tracker.update(0, 6, [])).toThrow(expect.objectContaining({ code: "bad_request" }));
    expect(() => tracker.update(3, 1, [])).toThrow(expect.objectContaining({ code: "bad_request" }));
    expect(tracker.clear()).toEqual([{ type: "cleared" }]);
    expect(tracker.heldBlocks).toBe(0);
    expect(tracker.tokens(0)).toEqual([]);
    expect(() => new SequenceKvTracker(0)).toThrow(expect.objectContaining({ code: "invalid_option" }));
  });

  it("sequence kv tracker - its events keep a router's indexer equal to what the sequences hold", () => {
    const tracker = new SequenceKvTracker(4);
    const indexer = new KvIndexer({ blockSize: 4 });
    let eventId = 0;
    const apply = (events: KvCacheEventData[]): void => {
      for (const data of events) indexer.applyEvent({ workerId: "w", eventId: eventId++, data });
    };
    // A seeded walk of sequences growing, being cut back and reused.
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    for (let step = 0; step < 400; step++) {
      const sequence = rand(3);
      const held = tracker.tokens(sequence);
      const keep = rand(held.length + 1);
      const append = Array.from({ length: rand(20) }, () => rand(3));
      apply(tracker.update(sequence, keep, append));
      for (let s = 0; s < 3; s++) {
        const tokens = tracker.tokens(s);
        expect(indexer.findMatches(tokens).scores.get("w") ?? 0).toBe(Math.floor(tokens.length / 4));
      }
      // Nothing stale either: the indexer holds exactly the blocks some sequence holds.
      expect(indexer.stats().blocks).toBe(tracker.heldBlocks);
    }
    // A router that lost the stream rebuilds the same view from the tracker's resync events.
    const rebuilt = new KvIndexer({ blockSize: 4 });
    tracker.resyncEvents().forEach((data, i) => {
      rebuilt.applyEvent({ workerId: "w", eventId: i, data });
    });
    expect(rebuilt.stats().blocks).toBe(tracker.heldBlocks);
    for (let s = 0; s < 3; s++) {
      const tokens = tracker.tokens(s);
      expect(rebuilt.findMatches(tokens).scores.get("w") ?? 0).toBe(Math.floor(tokens.length / 4));
    }
  });
});
