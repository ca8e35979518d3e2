import { mulberry32 } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { codeOf } from "../testing/error-code.js";
import { RadixTree } from "./radix-tree.js";

const chain = (prefix: string, n: number, from = 0): string[] =>
  Array.from({ length: n }, (_, i) => `${prefix}${i + from}`);

describe("radix-tree", () => {
  it("radix-tree - findMatches counts each worker's leading blocks", () => {
    const tree = new RadixTree();
    const shared = chain("s", 4);
    tree.store("w1", null, shared, 0);
    tree.store("w2", null, shared.slice(0, 2), 0);
    tree.store("w1", "s3", ["a4", "a5"], 0);
    tree.store("w3", null, ["x0"], 0);
    const prompt = [...shared, "a4", "a5", "a6"];
    expect(Object.fromEntries(tree.findMatches(prompt))).toEqual({ w1: 6, w2: 2 });
    expect(Object.fromEntries(tree.findMatches(["s0", "zz"]))).toEqual({ w1: 1, w2: 1 });
    expect(tree.findMatches(["nope"]).size).toBe(0);
    expect(tree.findMatches([]).size).toBe(0);
    expect(tree.stats()).toMatchObject({ nodes: 7, blocks: 4 + 2 + 2 + 1, workers: 3 });
  });

  it("radix-tree - a hash is only matched under its own parent", () => {
    const tree = new RadixTree();
    tree.store("w1", null, ["a", "b"], 0);
    // "b" at depth 0 is not the "b" that hangs off "a".
    expect(tree.findMatches(["b"]).size).toBe(0);
  });

  it("radix-tree - a run whose parent the worker does not hold is dropped as unreachable", () => {
    const tree = new RadixTree();
    tree.store("w1", null, ["a", "b"], 0);
    expect(tree.store("w2", "b", ["c"], 0)).toBe(0);
    expect(tree.store("w1", "missing", ["c"], 0)).toBe(0);
    expect(tree.stats().orphanStores).toBe(2);
    expect(tree.blockCount("w2")).toBe(0);
  });

  it("radix-tree - block-by-block stores follow the worker's last block, and never a freed one", () => {
    const tree = new RadixTree();
    expect(tree.store("w1", null, ["a"])).toBe(1);
    for (const [parent, block] of [
      ["a", "b"],
      ["b", "c"],
      ["c", "d"],
    ] as const) {
      expect(tree.store("w1", parent, [block])).toBe(1);
    }
    expect(tree.findMatches(["a", "b", "c", "d"]).get("w1")).toBe(4);
    // d is freed (w1 was its only holder); a store under it is unreachable.
    expect(tree.remove("w1", ["d"])).toBe(1);
    expect(tree.store("w1", "d", ["e"])).toBe(0);
    // Another worker re-creates d (a new node); w1 does not hold it, so e stays unreachable for w1.
    expect(tree.store("w2", null, ["a", "b", "c", "d"])).toBe(4);
    expect(tree.store("w1", "d", ["e"])).toBe(0);
    // w1 stores d again, then e under it.
    expect(tree.store("w1", "c", ["d"])).toBe(1);
    expect(tree.store("w1", "d", ["e"])).toBe(1);
    const scores = tree.findMatches(["a", "b", "c", "d", "e"]);
    expect([scores.get("w1"), scores.get("w2")]).toEqual([5, 4]);
  });

  it("radix-tree - removing a block drops it and its descendants from that worker only", () => {
    const tree = new RadixTree();
    tree.store("w1", null, chain("b", 5), 0);
    tree.store("w2", null, chain("b", 5), 0);
    expect(tree.remove("w1", ["b2"])).toBe(3);
    expect(Object.fromEntries(tree.findMatches(chain("b", 5)))).toEqual({ w1: 2, w2: 5 });
    expect(tree.remove("w1", ["b4", "unknown"])).toBe(0);
    tree.remove("w2", ["b0"]);
    expect(Object.fromEntries(tree.findMatches(chain("b", 5)))).toEqual({ w1: 2 });
    expect(tree.stats().nodes).toBe(2);
  });

  it("radix-tree - clearWorker and removeWorker free every node only that worker held", () => {
    const tree = new RadixTree();
    tree.store("w1", null, chain("a", 3), 0);
    tree.store("w1", null, chain("b", 3), 0);
    tree.store("w2", null, chain("a", 1), 0);
    expect(tree.clearWorker("w1")).toBe(6);
    expect(tree.stats()).toMatchObject({ nodes: 1, blocks: 1 });
    expect(tree.workerIds()).toContain("w1");
    tree.removeWorker("w1");
    expect(tree.workerIds()).toEqual(["w2"]);
    tree.removeWorker("w2");
    expect(tree.stats()).toMatchObject({ nodes: 0, blocks: 0, workers: 0 });
  });

  it("radix-tree - ttl expiry drops memberships not touched within the ttl", () => {
    const tree = new RadixTree({ ttlMs: 100 });
    tree.store("w1", null, chain("a", 3), 0);
    tree.store("w2", null, chain("a", 3), 50);
    tree.store("w1", null, chain("a", 1), 60); // refreshes a0 only
    expect(tree.expire(120)).toBe(2); // w1's a1, a2 (stored at 0)
    expect(Object.fromEntries(tree.findMatches(chain("a", 3)))).toEqual({ w1: 1, w2: 3 });
    expect(tree.expire(161)).toBe(4);
    expect(tree.stats()).toMatchObject({ nodes: 0, blocks: 0, prunedBlocks: 6 });
  });

  it("radix-tree - the size bound prunes the oldest memberships down to the target ratio", () => {
    const tree = new RadixTree({ maxBlocks: 100, pruneTargetRatio: 0.5 });
    for (let i = 0; i < 20; i++) tree.store(`w${i % 4}`, null, chain(`p${i}-`, 5), i);
    // 100 memberships: at the bound, not past it.
    expect(tree.stats().blocks).toBe(100);
    tree.store("w0", null, ["late"], 100);
    const stats = tree.stats();
    expect(stats.blocks).toBeLessThanOrEqual(50);
    expect(stats.prunedBlocks).toBe(101 - stats.blocks);
    // The newest survive, the oldest went.
    expect(tree.findMatches(["late"]).get("w0")).toBe(1);
    expect(tree.findMatches(chain("p19-", 5)).get("w3")).toBe(5);
    expect(tree.findMatches(chain("p0-", 5)).size).toBe(0);
  });

  it("radix-tree - the per-worker bound evicts that worker's least recently stored", () => {
    const tree = new RadixTree({ maxBlocksPerWorker: 6 });
    tree.store("w1", null, chain("a", 3), 0);
    tree.store("w1", null, chain("b", 3), 1);
    tree.store("w2", null, chain("c", 3), 2);
    tree.store("w1", null, chain("a", 3), 3); // touch a: b is now the oldest
    tree.store("w1", null, chain("d", 3), 4);
    expect(tree.blockCount("w1")).toBe(6);
    expect(tree.findMatches(chain("a", 3)).get("w1")).toBe(3);
    expect(tree.findMatches(chain("b", 3)).size).toBe(0);
    expect(tree.findMatches(chain("c", 3)).get("w2")).toBe(3);
  });

  it("radix-tree - snapshot and restore round-trip matches and ages", () => {
    const tree = new RadixTree({ ttlMs: 1_000 });
    tree.store("w1", null, chain("a", 4), 0);
    tree.store("w2", null, chain("a", 2), 500);
    tree.store("w2", "a1", ["x2", "x3"], 600);
    const snapshot = JSON.parse(JSON.stringify(tree.snapshot(700)));
    const copy = new RadixTree({ ttlMs: 1_000 });
    copy.restore(snapshot, 10_700);
    for (const prompt of [chain("a", 4), ["a0", "a1", "x2", "x3"], ["zz"]]) {
      expect(Object.fromEntries(copy.findMatches(prompt))).toEqual(Object.fromEntries(tree.findMatches(prompt)));
    }
    expect(copy.stats()).toMatchObject({ nodes: tree.stats().nodes, blocks: tree.stats().blocks });
    // Ages carried over: w1's blocks (age 700) expire 300 ms later; w2's (age 100-200) later still.
    copy.expire(10_700 + 301);
    expect(Object.fromEntries(copy.findMatches(chain("a", 4)))).toEqual({ w2: 2 });
    expect(codeOf(() => copy.restore({ version: 2 } as never, 0))).toBe("bad_request");
  });

  it("radix-tree - invalid options are refused with invalid_option", () => {
    expect(codeOf(() => new RadixTree({ ttlMs: 0 }))).toBe("invalid_option");
    expect(codeOf(() => new RadixTree({ maxBlocks: 1.5 }))).toBe("invalid_option");
    expect(codeOf(() => new RadixTree({ pruneTargetRatio: 1 }))).toBe("invalid_option");
  });

  it.each([
    { workerCount: 4, seed: 42, options: {} },
    // Past 16 holders a block switches to a position map: exercise it, and the per-worker logs.
    { workerCount: 40, seed: 7, options: {} },
    // Member chunks grow to 128 slots and are released and reused as workers come and go.
    { workerCount: 100, seed: 11, options: {} },
    { workerCount: 24, seed: 9, options: { ttlMs: 1e12 } },
  ])(
    "radix-tree - random operations agree with a naive per-worker model ($workerCount workers)",
    ({ workerCount, seed, options }) => {
      const rng = mulberry32(seed);
      const tree = new RadixTree(options);
      // Naive model: per worker, the set of held chain positions `${path}` where a path is its hashes joined.
      const held = new Map<string, Set<string>>();
      const workers = Array.from({ length: workerCount }, (_, i) => `w${i}`);
      const prompts = Array.from({ length: 12 }, (_, p) => {
        const base = p % 3;
        const length = 3 + Math.floor(rng() * 6);
        // Prompts share prefixes by family (base): the first 2 blocks are common.
        return Array.from({ length }, (_, i) => (i < 2 ? `f${base}-${i}` : `p${p}-${i}`));
      });
      // Hash i of a prompt is "the prefix up to i": in the model, key it by the joined prefix.
      const key = (prompt: string[], i: number): string => prompt.slice(0, i + 1).join("/");
      for (let step = 0; step < 1_000 * Math.ceil(workerCount / 4); step++) {
        const worker = workers[Math.floor(rng() * workers.length)] as string;
        const prompt = prompts[Math.floor(rng() * prompts.length)] as string[];
        const set = held.get(worker) ?? new Set<string>();
        held.set(worker, set);
        const op = rng();
        if (op < 0.5) {
          // Store a run starting at a random depth.
          const from = Math.floor(rng() * prompt.length);
          const to = from + 1 + Math.floor(rng() * (prompt.length - from));
          const parentHash = from === 0 ? null : (prompt[from - 1] as string);
          const recorded = tree.store(worker, parentHash, prompt.slice(from, to), step);
          const reachable = from === 0 || set.has(key(prompt, from - 1));
          expect(recorded).toBe(reachable ? to - from : 0);
          if (reachable) for (let i = from; i < to; i++) set.add(key(prompt, i));
        } else if (op < 0.8) {
          const at = Math.floor(rng() * prompt.length);
          tree.remove(worker, [prompt[at] as string]);
          // Only the block of this prompt's chain with that hash is meant (hashes are unique per prefix here).
          if (set.has(key(prompt, at))) for (const k of [...set]) if (k.startsWith(key(prompt, at))) set.delete(k);
        } else if (op < 0.83) {
          tree.clearWorker(worker);
          set.clear();
        }
        if (step % 10 === 0) {
          const probe = prompts[Math.floor(rng() * prompts.length)] as string[];
          const expected: Record<string, number> = {};
          for (const [w, s] of held) {
            let n = 0;
            while (n < probe.length && s.has(key(probe, n))) n++;
            if (n > 0) expected[w] = n;
          }
          expect(Object.fromEntries(tree.findMatches(probe))).toEqual(expected);
        }
      }
      let total = 0;
      for (const s of held.values()) total += s.size;
      expect(tree.stats().blocks).toBe(total);
    },
  );
});
