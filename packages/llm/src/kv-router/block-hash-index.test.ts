import { mulberry32 } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { BlockHashIndex } from "./block-hash-index.js";

describe("block-hash-index", () => {
  it.each([
    ["hex block hashes", (i: number) => i.toString(16).padStart(16, "0")],
    // Same low digits everywhere: every key lands in one probe run, exercising backward-shift deletion.
    ["colliding hashes", (i: number) => `${i.toString(16).padStart(8, "0")}00000000`],
    ["other strings", (i: number) => `k${i}`],
  ])("block-hash-index - agrees with a Map under random inserts and deletes (%s)", (_name, key) => {
    const rand = mulberry32(5);
    // Node 0 is the tree's root, never indexed (a zero in the table marks a free slot).
    const keys: (string | undefined)[] = [""];
    const index = new BlockHashIndex(keys);
    const reference = new Map<string, number>();
    const free: number[] = [];
    for (let step = 0; step < 6_000; step++) {
      const k = key(Math.floor(rand() * 1_500));
      const present = reference.get(k);
      if (present === undefined && rand() < 0.6) {
        const node = free.pop() ?? keys.length;
        keys[node] = k;
        const fingerprint = BlockHashIndex.fingerprint(k);
        const slot = index.slotFor(k, fingerprint);
        expect(index.nodeAt(slot)).toBe(-1);
        index.insertAt(slot, fingerprint, node);
        reference.set(k, node);
      } else if (present !== undefined) {
        expect(index.delete(k)).toBe(true);
        keys[present] = undefined;
        free.push(present);
        reference.delete(k);
      } else {
        expect(index.delete(k)).toBe(false);
      }
      if (step % 250 === 0) {
        expect(index.size).toBe(reference.size);
        for (const [rk, node] of reference) expect(index.get(rk)).toBe(node);
      }
    }
    expect(index.get("absent")).toBeUndefined();
  });
});
