import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { decideDisaggregation, resolveDisaggregationOptions, uncachedPromptTokens } from "./disagg-policy.js";

const prefill = (queuedPrefillTokens = 0) => ({ workerId: "p1", queuedPrefillTokens });

describe("disaggregation policy - where a request is prefilled", () => {
  it("disaggregation policy - a long uncached prompt goes to an idle prefill worker", () => {
    expect(
      decideDisaggregation({ promptTokens: 3000, cachedBlocks: 0, blockSize: 16, prefillWorker: prefill() }),
    ).toEqual({
      kind: "remote",
      prefillWorkerId: "p1",
      uncachedTokens: 3000,
    });
  });

  it("disaggregation policy - the decode worker's cache counts: a long prompt mostly cached prefills locally", () => {
    const decision = decideDisaggregation({
      promptTokens: 3000,
      cachedBlocks: 160,
      blockSize: 16,
      prefillWorker: prefill(),
    });
    expect(decision).toMatchObject({ kind: "local", outcome: "local", reason: "short_prompt", uncachedTokens: 440 });
  });

  it("disaggregation policy - the threshold is exclusive: exactly minUncachedTokens stays local", () => {
    const options = resolveDisaggregationOptions({ minUncachedTokens: 512 });
    const at = (promptTokens: number) =>
      decideDisaggregation({ promptTokens, cachedBlocks: 0, blockSize: 16, prefillWorker: prefill() }, options).kind;
    expect(at(512)).toBe("local");
    expect(at(513)).toBe("remote");
  });

  it("disaggregation policy - a busy prefill worker leaves the prefill to the decode worker", () => {
    const options = resolveDisaggregationOptions({ prefillBusyTokens: 4000 });
    const input = { promptTokens: 3000, cachedBlocks: 0, blockSize: 16 };
    expect(decideDisaggregation({ ...input, prefillWorker: prefill(4000) }, options).kind).toBe("remote");
    expect(decideDisaggregation({ ...input, prefillWorker: prefill(4001) }, options)).toMatchObject({
      kind: "local",
      reason: "prefill_busy",
    });
  });

  it("disaggregation policy - with no prefill worker alive the request is served aggregated", () => {
    expect(
      decideDisaggregation({ promptTokens: 9000, cachedBlocks: 0, blockSize: 16, prefillWorker: undefined }),
    ).toMatchObject({
      kind: "local",
      outcome: "skipped_no_prefill_workers",
    });
  });

  it("disaggregation policy - uncached tokens never go below zero; options are checked", () => {
    expect(uncachedPromptTokens({ promptTokens: 10, cachedBlocks: 4, blockSize: 16 })).toBe(0);
    expect(() => resolveDisaggregationOptions({ minUncachedTokens: -1 })).toThrow(TdistError);
    expect(resolveDisaggregationOptions({ minUncachedTokens: undefined })).toEqual(resolveDisaggregationOptions());
  });
});
