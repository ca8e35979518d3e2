import type { LlamaContext } from "node-llama-cpp";
import { describe, expect, it } from "vitest";
import { commonPrefixLength, SequencePool } from "./sequence-pool.js";

/** A context whose sequences hold the given cached tokens. */
function contextWith(cached: number[][]): LlamaContext {
  let next = 0;
  return { getSequence: () => ({ contextTokens: cached[next++] ?? [] }) } as unknown as LlamaContext;
}

const tokensOf = (slot: { sequence: unknown }): number[] =>
  (slot.sequence as { contextTokens: number[] }).contextTokens;

describe("SequencePool", () => {
  it("sequence pool - common prefix length", () => {
    expect(commonPrefixLength([1, 2, 3], [1, 2, 4])).toBe(2);
    expect(commonPrefixLength([], [1])).toBe(0);
  });

  it("sequence pool - picks the idle sequence sharing the longest prefix, least recently used on ties", async () => {
    const pool = new SequencePool(
      contextWith([
        [9, 9],
        [1, 2, 3],
        [1, 2],
      ]),
      3,
    );
    const best = await pool.acquire([1, 2, 3, 4]);
    expect(tokensOf(best)).toEqual([1, 2, 3]);
    const next = await pool.acquire([1, 2, 7]);
    expect(tokensOf(next)).toEqual([1, 2]);
    pool.release(best);
    pool.release(next);
    // No shared prefix anywhere: the least recently used idle one ([9, 9], never used).
    expect(tokensOf(await pool.acquire([5]))).toEqual([9, 9]);
  });

  it("sequence pool - waits in FIFO order when all are busy; an abort while waiting rejects", async () => {
    const pool = new SequencePool(contextWith([[1]]), 1);
    const only = await pool.acquire([1]);
    const order: string[] = [];
    const controller = new AbortController();
    const first = pool.acquire([2]).then((slot) => {
      order.push("first");
      return slot;
    });
    const aborted = pool.acquire([3], controller.signal);
    const second = pool.acquire([4]).then((slot) => {
      order.push("second");
      return slot;
    });
    controller.abort();
    await expect(aborted).rejects.toThrow(/cancelled/);
    pool.release(only);
    pool.release(await first);
    await second;
    expect(order).toEqual(["first", "second"]);
  });
});
