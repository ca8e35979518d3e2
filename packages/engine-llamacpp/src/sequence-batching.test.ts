import type { BatchItem, LlamaContext, Token } from "node-llama-cpp";
import { describe, expect, it } from "vitest";
import { DecodePause } from "./decode-pause.js";
import { SequenceBatching } from "./sequence-batching.js";

/** A context whose queue holds `[sequenceId, tokenCount]` decodes, and the batch items node-llama-cpp builds from it. */
function queue(decodes: [number, number][]): { context: LlamaContext; items: BatchItem[] } {
  const queued = decodes.map(([sequenceId, count]) => ({
    sequenceId,
    tokens: Array.from({ length: count }, (_, i) => (sequenceId * 1000 + i) as Token),
  }));
  const items = queued.map((decode) => ({ tokens: decode.tokens, logits: [], evaluationPriority: 5 as const }));
  return { context: { _queuedDecodes: queued } as unknown as LlamaContext, items };
}

const sequenceOf = (item: BatchItem): number => Math.floor((item.tokens[0] as number) / 1000);

describe("SequenceBatching", () => {
  it("sequence batching - adds the batch in ascending sequence id order", () => {
    const { context, items } = queue([
      [3, 1],
      [0, 1],
      [5, 1],
      [1, 1],
    ]);
    const batching = new SequenceBatching();
    batching.attach(context);
    const batch = batching.prioritize({ items, size: 512 });
    expect(batch.map((entry) => sequenceOf(entry.item))).toEqual([0, 1, 3, 5]);
    expect(batch.every((entry) => entry.processAmount === 1)).toBe(true);
  });

  it("sequence batching - alternates the running decodes with one prompt alone", () => {
    const { context, items } = queue([
      [2, 700],
      [4, 1],
      [1, 400],
      [0, 1],
    ]);
    const batching = new SequenceBatching();
    batching.attach(context);
    const describe = () =>
      batching.prioritize({ items, size: 512 }).map((entry) => [sequenceOf(entry.item), entry.processAmount]);
    expect(describe()).toEqual([
      [0, 1],
      [4, 1],
    ]);
    // The first prompt to arrive, alone and cut to the batch size.
    expect(describe()).toEqual([[2, 512]]);
    expect(describe()).toEqual([
      [0, 1],
      [4, 1],
    ]);
    const prompts = queue([
      [3, 20],
      [1, 30],
    ]);
    batching.attach(prompts.context);
    expect(batching.prioritize({ items: prompts.items, size: 512 }).map((entry) => sequenceOf(entry.item))).toEqual([
      3,
    ]);
  });

  it("sequence batching - falls back to one sequence when the queue does not match the items", () => {
    const { context, items } = queue([
      [1, 1],
      [0, 1],
    ]);
    const batching = new SequenceBatching();
    batching.attach(context);
    const foreign = items.map((item) => ({ ...item, tokens: [...item.tokens] }));
    expect(batching.prioritize({ items: foreign, size: 512 })).toEqual([{ item: foreign[0], processAmount: 1 }]);
    expect(batching.fallbacks).toBe(1);
    const detached = new SequenceBatching();
    expect(detached.prioritize({ items, size: 512 })).toHaveLength(1);
  });
});

describe("DecodePause", () => {
  it("decode pause - holds loops until every pause ends", async () => {
    const pause = new DecodePause();
    await pause.resumed();
    let release: () => void = () => {};
    const held = pause.during(() => new Promise<void>((resolve) => (release = resolve)));
    const second = pause.during(async () => {});
    expect(pause.paused).toBe(true);
    let resumed = false;
    const waiting = pause.resumed().then(() => (resumed = true));
    await second;
    await Promise.resolve();
    expect(resumed).toBe(false);
    release();
    await held;
    await waiting;
    expect(resumed).toBe(true);
    expect(pause.paused).toBe(false);
  });
});
