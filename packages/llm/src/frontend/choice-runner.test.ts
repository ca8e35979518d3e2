import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { type ChoiceEvent, type ChoiceTotals, runChoices } from "./choice-runner.js";
import type { ModelEntry } from "./model-manager.js";
import type { ChoiceDecoder, ModelPipeline } from "./model-pipeline.js";

/** What the fake engine does for a request whose first token id is the key. */
type Script = (signal: AbortSignal) => AsyncGenerator<EngineOutput>;

function requestFor(first: number): PreprocessedRequest {
  return {
    tokenIds: [first],
    stop: { maxTokens: 10 },
    sampling: {},
    eosTokenIds: [],
  } as unknown as PreprocessedRequest;
}

/** An entry whose engine runs `scripts[tokenIds[0]]` and whose decoder spells token id n as `t{n}`. */
function fakeEntry(scripts: Record<number, Script>): ModelEntry<ModelPipeline> {
  const decoder = (): ChoiceDecoder => {
    let count = 0;
    return {
      push(output) {
        count += output.tokenIds.length;
        const step = { text: output.tokenIds.map((id) => `t${id}`).join(""), tokenIds: output.tokenIds };
        return output.finishReason ? { ...step, finishReason: output.finishReason } : step;
      },
      flush: () => ({ text: "", tokenIds: [], finishReason: "error" }),
      get completionTokens() {
        return count;
      },
    };
  };
  const client = {
    generate(request: PreprocessedRequest, options: { signal: AbortSignal }) {
      const script = scripts[request.tokenIds[0] as number] as Script;
      return script(options.signal);
    },
  };
  return { client, pipeline: { decoder }, llmRouter: undefined } as unknown as ModelEntry<ModelPipeline>;
}

function newTotals(): ChoiceTotals {
  return { completionTokens: 0, cachedTokens: 0, firstTokenAt: undefined, tokenTimes: [] };
}

async function* tokens(ids: number[], signal?: AbortSignal): AsyncGenerator<EngineOutput> {
  for (const [i, id] of ids.entries()) {
    await Promise.resolve();
    if (signal?.aborted) throw new TdistError("cancelled", "killed");
    yield i === ids.length - 1 ? { tokenIds: [id], finishReason: "stop" } : { tokenIds: [id] };
  }
}

describe("choice runner", () => {
  it("choice runner - hands every event to the sink as decoded, and counts tokens", async () => {
    const events: ChoiceEvent[] = [];
    const totals = newTotals();
    const entry = fakeEntry({ 1: () => tokens([1, 2, 3]), 7: () => tokens([7, 8]) });
    const choices = [
      { index: 0, request: requestFor(1) },
      { index: 1, request: requestFor(7) },
    ];
    await runChoices(entry, choices, [], new AbortController().signal, totals, (event) => events.push(event));
    const textOf = (index: number) =>
      events
        .filter((e) => e.index === index)
        .map((e) => e.text)
        .join("");
    expect(textOf(0)).toBe("t1t2t3");
    expect(textOf(1)).toBe("t7t8");
    expect(events.filter((e) => e.finishReason === "stop").map((e) => e.index)).toEqual([1, 0]);
    expect(totals.completionTokens).toBe(5);
    expect(totals.tokenTimes).toHaveLength(5);
  });

  it("choice runner - a failure before any output rejects and emits nothing", async () => {
    const events: ChoiceEvent[] = [];
    const failing: Script = async function* () {
      yield* [];
      throw new TdistError("no_instances", "none");
    };
    const slow: Script = (signal) => tokens([5, 6, 7, 8], signal);
    const entry = fakeEntry({ 1: failing, 5: slow });
    const choices = [
      { index: 0, request: requestFor(1) },
      { index: 1, request: requestFor(5) },
    ];
    const run = runChoices(entry, choices, [], new AbortController().signal, newTotals(), (e) => events.push(e));
    await expect(run).rejects.toMatchObject({ code: "no_instances" });
    expect(events).toEqual([]);
  });

  it("choice runner - a failure after output ends that choice with finish_reason error", async () => {
    const events: ChoiceEvent[] = [];
    const died = new TdistError("disconnected", "connection to 127.0.0.1:1 closed");
    const breaks: Script = async function* () {
      yield { tokenIds: [1] };
      await Promise.resolve();
      throw died;
    };
    const entry = fakeEntry({ 1: breaks });
    await runChoices(
      entry,
      [{ index: 0, request: requestFor(1) }],
      [],
      new AbortController().signal,
      newTotals(),
      (e) => events.push(e),
    );
    expect(events.map((e) => [e.text, e.finishReason, e.error])).toEqual([
      ["t1", undefined, undefined],
      ["", "error", died],
    ]);
  });

  it("choice runner - aborting the signal cancels every choice", async () => {
    const events: ChoiceEvent[] = [];
    const controller = new AbortController();
    const endless: Script = async function* (signal) {
      for (let id = 1; ; id++) {
        await new Promise((resolve) => setImmediate(resolve));
        if (signal.aborted) throw new TdistError("cancelled", "killed");
        yield { tokenIds: [id] };
      }
    };
    const entry = fakeEntry({ 1: endless });
    const run = runChoices(entry, [{ index: 0, request: requestFor(1) }], [], controller.signal, newTotals(), (e) => {
      events.push(e);
      if (events.length === 3) controller.abort();
    });
    await run;
    expect(events.at(-1)?.finishReason).toBe("cancelled");
  });

  it("choice runner - waits on backpressure between engine outputs", async () => {
    const events: ChoiceEvent[] = [];
    let release: () => void = () => {};
    let blocked: Promise<void> | undefined = new Promise<void>((resolve) => {
      release = resolve;
    });
    const entry = fakeEntry({ 1: () => tokens([1, 2, 3]) });
    const run = runChoices(
      entry,
      [{ index: 0, request: requestFor(1) }],
      [],
      new AbortController().signal,
      newTotals(),
      (e) => events.push(e),
      () => blocked,
    );
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(events).toHaveLength(1);
    blocked = undefined;
    release();
    await run;
    expect(events).toHaveLength(3);
  });

  it("choice runner - the first choice's routing decision and worker come from its stream's route", async () => {
    const decision = { requestId: "r", workerId: "w2", cachedBlocks: 3, requestBlocks: 4, policy: "kv" };
    const streamOf = (workerId: string, ids: number[]) =>
      Object.assign(tokens(ids), { instanceId: workerId, route: { instance: { instanceId: workerId }, decision } });
    const client = {
      generate: (request: PreprocessedRequest) =>
        request.tokenIds[0] === 1 ? streamOf("w2", [1, 2]) : streamOf("w9", [7]),
    };
    const entry = { ...fakeEntry({}), client, llmRouter: {} } as unknown as ModelEntry<ModelPipeline>;
    const totals = newTotals();
    const choices = [
      { index: 0, request: requestFor(1) },
      { index: 1, request: requestFor(7) },
    ];
    await runChoices(entry, choices, [], new AbortController().signal, totals, () => {});
    expect(totals.decision).toBe(decision);
    expect(totals.workerId).toBe("w2");
  });
});
