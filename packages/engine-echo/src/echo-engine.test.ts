import type { EngineOutput, PreprocessedRequest } from "@tdist/llm";
import { Context, TdistError, withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { createEchoEngine } from "./echo-engine.js";

const BOUND_MS = 5_000;

function request(tokenIds: number[], stop: Partial<PreprocessedRequest["stop"]> = {}, eos: number[] = []) {
  return {
    model: "echo",
    tokenIds,
    sampling: {},
    stop: { maxTokens: 100, ...stop },
    eosTokenIds: eos,
    output: {},
  } satisfies PreprocessedRequest;
}

async function collect(stream: AsyncIterable<EngineOutput>): Promise<EngineOutput[]> {
  return withTimeout("collect", BOUND_MS, undefined, async () => {
    const out: EngineOutput[] = [];
    for await (const message of stream) out.push(message);
    return out;
  });
}

const tokensOf = (messages: EngineOutput[]): number[] => messages.flatMap((m) => m.tokenIds);
const lastReason = (messages: EngineOutput[]) => messages.at(-1)?.finishReason;

describe("echo engine", () => {
  it("echo engine - streams the prompt back one token per message and ends with stop", async () => {
    const out = await collect(createEchoEngine()(request([5, 6, 7]), new Context()));
    expect(out).toEqual([{ tokenIds: [5] }, { tokenIds: [6] }, { tokenIds: [7], finishReason: "stop" }]);
  });

  it("echo engine - maxTokens ends with length", async () => {
    const out = await collect(createEchoEngine()(request([1, 2, 3, 4], { maxTokens: 2 }), new Context()));
    expect(tokensOf(out)).toEqual([1, 2]);
    expect(lastReason(out)).toBe("length");
  });

  it("echo engine - maxTokens 0 ends at once with length", async () => {
    const out = await collect(createEchoEngine()(request([1, 2], { maxTokens: 0 }), new Context()));
    expect(out).toEqual([{ tokenIds: [], finishReason: "length" }]);
  });

  it("echo engine - empty prompt ends with stop", async () => {
    const out = await collect(createEchoEngine()(request([]), new Context()));
    expect(out).toEqual([{ tokenIds: [], finishReason: "stop" }]);
  });

  it("echo engine - eos ends with stop, the eos token included", async () => {
    const out = await collect(createEchoEngine()(request([1, 2, 99, 4], {}, [99]), new Context()));
    expect(tokensOf(out)).toEqual([1, 2, 99]);
    expect(lastReason(out)).toBe("stop");
  });

  it("echo engine - ignoreEos skips eos but still honours stopTokenIds", async () => {
    const out = await collect(
      createEchoEngine()(request([99, 1, 7, 2], { ignoreEos: true, stopTokenIds: [7] }, [99]), new Context()),
    );
    expect(tokensOf(out)).toEqual([99, 1, 7]);
    expect(lastReason(out)).toBe("stop");
  });

  it("echo engine - minTokens holds off stop ids", async () => {
    const out = await collect(
      createEchoEngine()(request([7, 1, 7, 2], { minTokens: 2, stopTokenIds: [7] }), new Context()),
    );
    expect(tokensOf(out)).toEqual([7, 1, 7]);
    expect(lastReason(out)).toBe("stop");
  });

  it("echo engine - graceful stop ends with cancelled", async () => {
    const ctx = new Context();
    const out: EngineOutput[] = [];
    await withTimeout("stream", BOUND_MS, undefined, async () => {
      for await (const message of createEchoEngine({ delayMsPerToken: 1 })(request([1, 2, 3, 4, 5]), ctx)) {
        out.push(message);
        if (out.length === 2) ctx.stopGenerating();
      }
    });
    expect(out).toEqual([{ tokenIds: [1] }, { tokenIds: [2] }, { tokenIds: [], finishReason: "cancelled" }]);
  });

  it("echo engine - kill during the delay ends at once and runs finally", async () => {
    const ctx = new Context();
    const stream = createEchoEngine({ delayMsPerToken: 60_000 })(request([1, 2, 3]), ctx);
    const pending = stream.next();
    setTimeout(() => ctx.kill(), 10);
    const started = Date.now();
    const result = await withTimeout("next", BOUND_MS, undefined, () => pending);
    expect(result.done).toBe(true);
    expect(Date.now() - started).toBeLessThan(BOUND_MS);
  });

  it("echo engine - return() closes the generator without more output", async () => {
    const ctx = new Context();
    const stream = createEchoEngine()(request([1, 2, 3]), ctx);
    expect((await withTimeout("next", BOUND_MS, undefined, () => stream.next())).value).toEqual({ tokenIds: [1] });
    ctx.kill();
    expect((await withTimeout("return", BOUND_MS, undefined, () => stream.return(undefined))).done).toBe(true);
    expect((await withTimeout("next", BOUND_MS, undefined, () => stream.next())).done).toBe(true);
  });

  it("echo engine - per-token delay paces the stream", async () => {
    const started = performance.now();
    await collect(createEchoEngine({ delayMsPerToken: 20 })(request([1, 2, 3, 4, 5]), new Context()));
    // Timers may fire a little early; 5 x 20 ms with slack.
    expect(performance.now() - started).toBeGreaterThanOrEqual(90);
  });

  it("echo engine - rejects invalid options and requests", async () => {
    expect(() => createEchoEngine({ delayMsPerToken: -1 })).toThrow(TdistError);
    const bad = { ...request([1]), stop: { maxTokens: -1 } };
    const error = await collect(createEchoEngine()(bad, new Context())).catch((err: unknown) => err);
    expect(TdistError.is(error, "bad_request")).toBe(true);
  });
});
