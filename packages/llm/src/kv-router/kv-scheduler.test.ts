import { mulberry32 } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { codeOf } from "../testing/error-code.js";
import { KvScheduler, selectByCost, type WorkerView, workerCosts } from "./kv-scheduler.js";

function view(workerId: string, partial: Partial<WorkerView> = {}): WorkerView {
  return { workerId, overlapBlocks: 0, prefillTokens: 0, decodeBlocks: 0, activePrefixBlocks: 0, ...partial };
}

function bump(counts: number[], index: number): void {
  counts[index] = (counts[index] ?? 0) + 1;
}

describe("kv-scheduler", () => {
  it("kv-scheduler - cost is overlapWeight x prefill blocks + decode blocks", () => {
    // A 10-block request (block size 16) against three workers.
    const request = { tokens: 160, blocks: 10 };
    const costs = workerCosts(
      [
        view("w1", { overlapBlocks: 2, decodeBlocks: 9 }),
        view("w2", { overlapBlocks: 5, decodeBlocks: 4 }),
        view("w3", { overlapBlocks: 8, prefillTokens: 32, decodeBlocks: 8, activePrefixBlocks: 8 }),
      ],
      request,
      16,
      1,
    );
    // w1: prefill 8, decode 9 + 10 + 1 = 20 -> 28; w2: 5 + (4 + 11) = 20;
    // w3: prefill (32 + 32) / 16 = 4, decode 8 + (10 - 8) + 1 = 11 -> 15.
    expect(costs.map((c) => c.cost)).toEqual([28, 20, 15]);
    expect(costs[2]).toMatchObject({ prefillBlocks: 4, decodeBlocks: 11, busy: false });
    // Weight 0: pure load balancing.
    expect(workerCosts([view("a", { overlapBlocks: 10 }), view("b")], request, 16, 0).map((c) => c.cost)).toEqual([
      11, 11,
    ]);
    // A worker holding more than the request never gets negative prefill.
    expect(workerCosts([view("a", { overlapBlocks: 20 })], request, 16, 1)[0]?.prefillBlocks).toBe(0);
  });

  it("kv-scheduler - a prefix in flight on a worker counts as cached before its KV events arrive", () => {
    const request = { tokens: 160, blocks: 10 };
    // w1 is prefilling a request sharing 8 blocks (no events yet); w2 is idle and holds nothing.
    const [busyWithPrefix, idle] = workerCosts(
      [view("w1", { prefillTokens: 128, decodeBlocks: 9, activePrefixBlocks: 8 }), view("w2")],
      request,
      16,
      16,
    );
    // w1: prefill (128 + 32) / 16 = 10, decode 9 + 2 + 1 = 12 -> 172; w2: prefill 10, decode 11 -> 171.
    expect(busyWithPrefix).toMatchObject({ prefillBlocks: 10, decodeBlocks: 12, cost: 172 });
    expect(idle).toMatchObject({ prefillBlocks: 10, decodeBlocks: 11, cost: 171 });
    // Once that prefill is done, w1 wins clearly, whether or not the events arrived yet.
    const [done] = workerCosts([view("w1", { decodeBlocks: 9, activePrefixBlocks: 8 })], request, 16, 16);
    expect(done?.prefillBlocks).toBe(2);
    // The events' overlap still counts when it is the larger.
    const [cached] = workerCosts([view("w1", { overlapBlocks: 9, activePrefixBlocks: 8 })], request, 16, 16);
    expect(cached?.prefillBlocks).toBe(1);
  });

  it("kv-scheduler - temperature 0 takes the minimum and breaks ties at random", () => {
    const rng = mulberry32(7);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4_000; i++) bump(counts, selectByCost([5, 3, 3, 9], 0, rng));
    expect(counts[0]).toBe(0);
    expect(counts[3]).toBe(0);
    expect(counts[1]).toBeGreaterThan(1_800);
    expect(counts[2]).toBeGreaterThan(1_800);
    expect(selectByCost([4], 0, rng)).toBe(0);
  });

  it("kv-scheduler - temperature > 0 samples with softmax over normalised costs", () => {
    const rng = mulberry32(11);
    const costs = [0, 5, 10];
    const temperature = 0.5;
    const counts = [0, 0, 0];
    const n = 20_000;
    for (let i = 0; i < n; i++) bump(counts, selectByCost(costs, temperature, rng));
    const weights = [0, 0.5, 1].map((x) => Math.exp(-x / temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    weights.forEach((w, i) => {
      expect(Math.abs((counts[i] as number) / n - w / total)).toBeLessThan(0.015);
    });
    // Equal costs: uniform.
    const even = [0, 0];
    for (let i = 0; i < 2_000; i++) bump(even, selectByCost([3, 3], 1, rng));
    expect(Math.abs((even[0] as number) - 1_000)).toBeLessThan(120);
  });

  it("kv-scheduler - busy workers are skipped; when every worker is busy the request is shed", () => {
    const scheduler = new KvScheduler(16, {
      busyThresholds: { activeDecodeBlocks: 0.9, activePrefillTokens: 1_000 },
      rng: mulberry32(1),
    });
    const request = { tokens: 64, blocks: 4 };
    // w1 is cheapest by far but its KV is 95% in use; w2 has too much prefill queued.
    const workers = [
      view("w1", { overlapBlocks: 4, decodeBlocks: 95, totalKvBlocks: 100 }),
      view("w2", { prefillTokens: 2_000 }),
      view("w3", { decodeBlocks: 200, totalKvBlocks: 1_000 }),
    ];
    const result = scheduler.schedule(workers, request);
    expect(result.workerId).toBe("w3");
    expect(result.costs.map((c) => c.busy)).toEqual([true, true, false]);
    // All busy: shed, as Dynamo's busy thresholds do.
    expect(codeOf(() => scheduler.schedule(workers.slice(0, 2), request))).toBe("all_workers_busy");
    // Without thresholds nobody is ever busy.
    expect(new KvScheduler(16).schedule(workers.slice(0, 2), request).workerId).toBe("w1");
  });

  it("kv-scheduler - per-request overrides replace the weight and temperature", () => {
    const scheduler = new KvScheduler(16, { overlapWeight: 1, rng: mulberry32(3) });
    const request = { tokens: 320, blocks: 20 };
    const workers = [view("cached", { overlapBlocks: 20, decodeBlocks: 10 }), view("idle")];
    expect(scheduler.schedule(workers, request).workerId).toBe("cached");
    expect(scheduler.schedule(workers, request, { overlapWeight: 0 }).workerId).toBe("idle");
  });

  it("kv-scheduler - invalid options are refused with invalid_option", () => {
    expect(codeOf(() => new KvScheduler(16, { overlapWeight: -1 }))).toBe("invalid_option");
    expect(codeOf(() => new KvScheduler(16, { temperature: Number.NaN }))).toBe("invalid_option");
    expect(codeOf(() => new KvScheduler(16, { busyThresholds: { activeDecodeBlocks: 1.5 } }))).toBe("invalid_option");
    expect(codeOf(() => new KvScheduler(16).schedule([], { tokens: 1, blocks: 0 }))).toBe("no_instances");
  });
});
