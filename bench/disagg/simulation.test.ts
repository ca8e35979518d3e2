import { DEFAULT_DISAGGREGATION } from "@tdist/llm";
import { withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { type ClusterOptions, simulate } from "./simulation.js";
import { type LongPromptWorkloadOptions, longPromptWorkload } from "./workload.js";

const BOUND_MS = 60_000;

const cluster: ClusterOptions = {
  blockSize: 16,
  engine: { totalKvBlocks: 4_096, maxNumSeqs: 64, maxNumBatchedTokens: 4_096 },
  disaggregation: DEFAULT_DISAGGREGATION,
};

const workload = (options: Partial<LongPromptWorkloadOptions> = {}) =>
  longPromptWorkload({
    ratePerS: 4,
    durationS: 3,
    meanInputTokens: 2_000,
    meanOutputTokens: 20,
    lengthSpread: 0.5,
    sharedPrefixes: 2,
    sharedPrefixTokens: 512,
    sharedFraction: 0.5,
    seed: 3,
    ...options,
  });

describe("disagg simulation", () => {
  it("disagg simulation - a split cluster prefills long prompts remotely and decodes them elsewhere, every request whole", async () => {
    const requests = workload();
    const run = await withTimeout("simulate", BOUND_MS, undefined, () =>
      simulate({ name: "1p1d", prefill: 1, decode: 1 }, requests, cluster, 1),
    );
    expect(run.requests).toHaveLength(requests.length);
    expect(run.requests.every((r) => !r.failed)).toBe(true);
    expect(run.requests.map((r) => r.outputTokens)).toEqual(requests.map((r) => r.maxTokens));
    expect(run.outcomes.remote).toBeGreaterThan(0);
    expect(run.outcomes.fallback).toBe(0);
    expect(run.transfers.count).toBe(run.outcomes.remote);
    // Every transfer moved a real payload through the transfer plane.
    expect(run.transfers.payloadBytes).toBeGreaterThan(run.transfers.count * 100);
    expect(run.stuckSettles).toBe(0);
    // The prefill worker served each remote request's prefill; the decode worker every request.
    expect(run.perWorker).toEqual([run.outcomes.remote, requests.length]);
  });

  it("disagg simulation - aggregated serving and short prompts never prefill remotely", async () => {
    const aggregated = await withTimeout("simulate", BOUND_MS, undefined, () =>
      simulate({ name: "agg", prefill: 0, decode: 2 }, workload(), cluster, 1),
    );
    expect(aggregated.outcomes.skipped_no_prefill_workers).toBe(aggregated.requests.length);
    const short = await withTimeout("simulate", BOUND_MS, undefined, () =>
      simulate(
        { name: "1p1d", prefill: 1, decode: 1 },
        workload({ meanInputTokens: 200, sharedFraction: 0 }),
        cluster,
        1,
      ),
    );
    expect(short.outcomes.local).toBe(short.requests.length);
    expect(short.transfers.count).toBe(0);
  });

  it("disagg simulation - the same workload and seed give the same simulated timings", async () => {
    const once = () =>
      withTimeout("simulate", BOUND_MS, undefined, () =>
        simulate({ name: "1p1d", prefill: 1, decode: 1 }, workload(), cluster, 1),
      );
    const a = await once();
    const b = await once();
    expect(b.requests.map((r) => r.tokenTimes)).toEqual(a.requests.map((r) => r.tokenTimes));
  });
});
