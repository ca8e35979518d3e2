import type { Instance } from "@tdist/runtime";
import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { computeBlockHashes } from "../kv/block-hash.js";
import type { WorkerLoadMetrics } from "../kv/kv-events.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { LlmdWeightedScorerPolicy } from "./llmd-weighted-scorer-policy.js";
import { SglangCacheAwarePolicy } from "./sglang-cache-aware-policy.js";
import { WorkerLoadTracker } from "./worker-load-tracker.js";

const BLOCK = 4;
const NO_EXCLUSIONS: ReadonlySet<string> = new Set();

function instance(instanceId: string): Instance {
  return {
    instanceId,
    namespace: "t",
    component: "backend",
    endpoint: "generate",
    transport: { tcp: "127.0.0.1:1" },
    metadata: {},
    registeredAt: 0,
  };
}

function request(tokenIds: number[]): PreprocessedRequest {
  return { model: "m", tokenIds, sampling: {}, stop: { maxTokens: 1 }, eosTokenIds: [], output: {} };
}

function tokens(seed: number, blocks: number): number[] {
  return Array.from({ length: blocks * BLOCK }, (_, i) => seed * 1000 + i);
}

const hashes = (prompt: number[]): string[] => computeBlockHashes(prompt, BLOCK).map((b) => b.blockHash);

function load(workerId: string, waitingSequences: number, kvUsage: number): WorkerLoadMetrics {
  return {
    workerId,
    activeSequences: 0,
    waitingSequences,
    activeKvBlocks: Math.round(kvUsage * 100),
    totalKvBlocks: 100,
    kvUsage,
    prefillTokensQueued: 0,
  };
}

describe("sglang-cache-aware-policy", () => {
  const ids = ["w1", "w2", "w3"];
  const pick = (policy: SglangCacheAwarePolicy, prompt: number[], loads: Record<string, number> = {}) =>
    policy.pick(ids.map(instance), {
      inFlight: (id) => loads[id] ?? 0,
      request: request(prompt),
      exclude: NO_EXCLUSIONS,
    })?.instance.instanceId;

  it("sglang - an imbalanced load (abs > 64 and rel > 1.5) routes to the least loaded, whatever the cache", () => {
    const cachedOnW1 = (): SglangCacheAwarePolicy => {
      const policy = new SglangCacheAwarePolicy({ blockSize: BLOCK });
      policy.tree.store("w1", null, hashes(tokens(1, 10)), 0);
      return policy;
    };
    let policy = cachedOnW1();
    expect(pick(policy, tokens(1, 10), { w1: 100, w2: 30, w3: 35 })).toBe("w2");
    expect(policy.lastRule).toBe("imbalanced-least-loaded");
    // abs 70 > 64 but 200 <= 1.5 x 140: balanced, so the cache decides.
    policy = cachedOnW1();
    expect(pick(policy, tokens(1, 10), { w1: 200, w2: 140, w3: 150 })).toBe("w1");
    expect(policy.lastRule).toBe("best-prefix-match");
    // rel 3x but abs 20: balanced.
    policy = cachedOnW1();
    expect(pick(policy, tokens(1, 10), { w1: 30, w2: 10, w3: 10 })).toBe("w1");
  });

  it("sglang - a match ratio above the threshold routes to the best match, else to the smallest tree", () => {
    const policy = new SglangCacheAwarePolicy({ blockSize: BLOCK });
    const shared = tokens(1, 4);
    policy.tree.store("w1", null, hashes([...shared, ...tokens(2, 6)]), 0); // w1: big tree
    policy.tree.store("w2", null, hashes(shared.slice(0, 2 * BLOCK)), 0); // w2: 2 blocks
    policy.tree.store("w3", null, hashes(tokens(9, 3)), 0); // w3: 3 blocks
    // 4 of 10 blocks match on w1 (0.4 > 0.3).
    expect(pick(policy, [...shared, ...tokens(3, 6)])).toBe("w1");
    expect(policy.lastRule).toBe("best-prefix-match");
    // 2 of 10 match (0.2): the smallest tree, w2 (2 blocks).
    expect(pick(policy, [...shared.slice(0, 2 * BLOCK), ...tokens(4, 8)])).toBe("w2");
    expect(policy.lastRule).toBe("smallest-tree");
    // The prompt was inserted into w2's tree.
    expect(policy.tree.blockCount("w2")).toBe(10);
  });

  it("sglang - a ratio exactly at the threshold is not above it (upstream compares with >)", () => {
    const policy = new SglangCacheAwarePolicy({ blockSize: BLOCK });
    policy.tree.store("w1", null, hashes(tokens(1, 3)), 0);
    policy.tree.store("w1", null, hashes(tokens(5, 5)), 0);
    // 3 of 10 blocks: ratio 0.3.
    expect(pick(policy, [...tokens(1, 3), ...tokens(2, 7)])).not.toBe("w1");
    expect(policy.lastRule).toBe("smallest-tree");
  });

  it("sglang - the route carries the decision and no load hooks (load is the client's in-flight count)", () => {
    const policy = new SglangCacheAwarePolicy({ blockSize: BLOCK });
    policy.tree.store("w2", null, hashes(tokens(1, 3)), 0);
    const route = policy.pick(ids.map(instance), {
      inFlight: () => 0,
      request: request([...tokens(1, 3), ...tokens(2, 1)]),
      exclude: NO_EXCLUSIONS,
    });
    expect(route?.instance.instanceId).toBe("w2");
    expect(route?.decision).toMatchObject({ workerId: "w2", cachedBlocks: 3, requestBlocks: 4, policy: "sglang" });
    expect(route?.onFirstResponse).toBeUndefined();
    expect(route?.release).toBeUndefined();
  });

  it("sglang - refuses a worker with another block size and validates its options", () => {
    const policy = new SglangCacheAwarePolicy({ blockSize: BLOCK });
    expect(() => policy.registerWorker("w1", { kvBlockSize: 8 })).toThrow(TdistError);
    for (let i = 0; i < 5; i++) expect(pick(policy, tokens(i, 2))).not.toBe("w1");
    expect(() => new SglangCacheAwarePolicy({ blockSize: BLOCK, cacheThreshold: 2 })).toThrow(TdistError);
  });
});

describe("llmd-weighted-scorer-policy", () => {
  it("llm-d - scores prefix x3 + queue x2 + KV utilisation x2 and picks the highest", () => {
    const loads = new WorkerLoadTracker();
    const policy = new LlmdWeightedScorerPolicy({ blockSize: BLOCK, loads, rng: () => 0 });
    const prompt = tokens(1, 10);
    policy.tree.store("w1", null, hashes(prompt).slice(0, 5), 0);
    loads.update(load("w1", 4, 0.5));
    loads.update(load("w2", 0, 0.1));
    loads.update(load("w3", 2, 0.9));
    const scores = policy.score(["w1", "w2", "w3"], hashes(prompt));
    // w1: 3 x 0.5 + 2 x 0 + 2 x 0.5 = 2.5; w2: 0 + 2 x 1 + 2 x 0.9 = 3.8; w3: 0 + 2 x 0.5 + 2 x 0.1 = 1.2.
    expect(scores.map((s) => Number(s.total.toFixed(6)))).toEqual([2.5, 3.8, 1.2]);
    expect(scores[0]).toMatchObject({ prefix: 0.5, queue: 0, kvUtilization: 0.5 });
    expect(
      policy.pick(["w1", "w2", "w3"].map(instance), {
        inFlight: () => 0,
        request: request(prompt),
        exclude: NO_EXCLUSIONS,
      })?.instance.instanceId,
    ).toBe("w2");
    // A full match and an empty queue: w1 = 3 + 2 + 1 = 6 beats w2 = 0 + 2 + 1.8.
    const other = tokens(2, 10);
    loads.update(load("w1", 0, 0.5));
    policy.tree.store("w1", null, hashes(other), 0);
    expect(
      policy.pick(["w1", "w2", "w3"].map(instance), {
        inFlight: () => 0,
        request: request(other),
        exclude: NO_EXCLUSIONS,
      })?.instance.instanceId,
    ).toBe("w1");
  });

  it("llm-d - equal queues score 1 and equal totals are broken at random", () => {
    const loads = new WorkerLoadTracker();
    let draws = 0;
    const policy = new LlmdWeightedScorerPolicy({
      blockSize: BLOCK,
      loads,
      rng: () => (draws++ % 2 === 0 ? 0.9 : 0.1),
    });
    const scores = policy.score(["a", "b"], hashes(tokens(1, 2)));
    expect(scores.map((s) => s.queue)).toEqual([1, 1]);
    const chosen = new Set<string>();
    for (let i = 0; i < 4; i++) {
      chosen.add(
        policy.pick(["a", "b"].map(instance), {
          inFlight: () => 0,
          request: request(tokens(100 + i, 2)),
          exclude: NO_EXCLUSIONS,
        })?.instance.instanceId as string,
      );
    }
    expect(chosen).toEqual(new Set(["a", "b"]));
  });

  it("llm-d - the prefix index is a per-worker LRU of the configured capacity", () => {
    const loads = new WorkerLoadTracker();
    const policy = new LlmdWeightedScorerPolicy({ blockSize: BLOCK, loads, lruCapacityPerWorker: 8, rng: () => 0 });
    const pickOne = (prompt: number[]) =>
      policy.pick([instance("w1")], { inFlight: () => 0, request: request(prompt), exclude: NO_EXCLUSIONS })?.instance
        .instanceId;
    pickOne(tokens(1, 5));
    pickOne(tokens(2, 5));
    expect(policy.tree.blockCount("w1")).toBeLessThanOrEqual(8);
    expect(policy.tree.findMatches(hashes(tokens(2, 5))).get("w1")).toBe(5);
    expect(policy.tree.findMatches(hashes(tokens(1, 5))).size).toBe(0);
  });
});
