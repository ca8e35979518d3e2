import { type Context, DistributedRuntime, delay, MemoryDiscoveryStore } from "@tdist/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { loadTokenizer } from "../preprocessor/tokenizer.js";
import type { EngineErrorCode, EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { builtinModelAssets } from "../worker/builtin-model.js";
import { serveModel } from "../worker/serve-model.js";
import { HttpFrontend, type HttpFrontendOptions } from "./http-frontend.js";
import { continuationOf } from "./request-migration.js";
import { TokenizerPipeline } from "./tokenizer-pipeline.js";

const assets = builtinModelAssets();
const tokenizer = loadTokenizer({ tokenizerJson: assets.tokenizerJson });
const BOUND = 10_000;
/** What the fake model answers to any prompt, greedily: a continuation re-derives its place from the prompt's tail. */
const ANSWER_TEXT = " alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu";
const ANSWER = tokenizer.encode(ANSWER_TEXT, { addSpecialTokens: false });

/** How the one doomed attempt fails once it has sent `at` answer tokens; later attempts run clean. */
interface Doom {
  at: number;
  how: "crash" | "bad_request" | "shutdown" | "drain" | "no_finish";
}

interface Seen {
  worker: string;
  requestId: string;
  request: PreprocessedRequest;
}

/** How many leading answer tokens the prompt already ends with (what earlier workers produced). */
function answeredSoFar(prompt: readonly number[]): number {
  for (let k = Math.min(prompt.length, ANSWER.length); k > 0; k--) {
    let match = true;
    for (let i = 0; i < k && match; i++) match = prompt[prompt.length - k + i] === ANSWER[i];
    if (match) return k;
  }
  return 0;
}

function fakeEngine(name: string, runtime: DistributedRuntime, seen: Seen[], doom: { current: Doom | undefined }) {
  return async function* (request: PreprocessedRequest, ctx: Context): AsyncGenerator<EngineOutput> {
    seen.push({ worker: name, requestId: ctx.requestId, request });
    const from = answeredSoFar(request.tokenIds);
    const mine = doom.current;
    doom.current = undefined;
    for (let i = 0; i < request.stop.maxTokens; i++) {
      const position = from + i;
      if (mine !== undefined && position === mine.at) {
        if (mine.how === "crash" || mine.how === "bad_request") {
          const errorCode: EngineErrorCode = mine.how === "crash" ? "engine_crashed" : "bad_request";
          yield { tokenIds: [], finishReason: "error", error: `fake ${mine.how}`, errorCode };
          return;
        }
        if (mine.how === "no_finish") return;
        // The worker's runtime goes away under the stream: at once, or after a drain's grace.
        void runtime.shutdown({ graceMs: mine.how === "drain" ? 50 : 0 });
        await delay(BOUND, ctx.signal);
        return;
      }
      await new Promise((resolve) => setImmediate(resolve));
      const token = ANSWER[position];
      if (token === undefined) {
        yield { tokenIds: [], finishReason: "stop" };
        return;
      }
      const last = i === request.stop.maxTokens - 1;
      yield last ? { tokenIds: [token], finishReason: "length" } : { tokenIds: [token] };
    }
  };
}

interface SseResult {
  text: string;
  finishReason: string | null;
  errors: { code?: string }[];
  usage: { completion_tokens: number } | undefined;
}

function parseSse(body: string): SseResult {
  const result: SseResult = { text: "", finishReason: null, errors: [], usage: undefined };
  for (const block of body.split("\n\n")) {
    const data = block.startsWith("data: ") ? block.slice(6) : undefined;
    if (data === undefined || data === "[DONE]") continue;
    const event = JSON.parse(data) as {
      choices?: { text?: string; finish_reason?: string | null }[];
      error?: { code?: string };
      usage?: { completion_tokens: number } | null;
    };
    if (event.error) result.errors.push(event.error);
    for (const choice of event.choices ?? []) {
      result.text += choice.text ?? "";
      if (choice.finish_reason) result.finishReason = choice.finish_reason;
    }
    if (event.usage) result.usage = event.usage;
  }
  return result;
}

describe("request migration", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function cluster(options: { workers?: number; frontend?: Partial<HttpFrontendOptions> } = {}) {
    const store = new MemoryDiscoveryStore();
    const seen: Seen[] = [];
    const doom: { current: Doom | undefined } = { current: undefined };
    const runtimeOn = async (): Promise<DistributedRuntime> => {
      const runtime = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
      cleanups.push(() => runtime.shutdown({ graceMs: 100 }));
      return runtime;
    };
    const count = options.workers ?? 2;
    for (let i = 0; i < count; i++) {
      const runtime = await runtimeOn();
      await serveModel(runtime, {
        namespace: "migration",
        tokenizerJson: assets.tokenizerJson,
        engine: fakeEngine(`w${i}`, runtime, seen, doom),
        card: { name: "fake", engine: "fake", ...assets.cardFields, kvBlockSize: 4, limits: {} },
      });
    }
    const frontend = await HttpFrontend.start({
      runtime: await runtimeOn(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      ...options.frontend,
    });
    cleanups.push(() => frontend.close({ graceMs: 100 }));
    await frontend.models.waitForModel("fake", BOUND);
    for (;;) {
      if ((frontend.models.get("fake")?.liveWorkers().length ?? 0) >= count) break;
      await delay(5);
    }
    const complete = async (body: Record<string, unknown>): Promise<{ status: number; body: string }> => {
      const response = await fetch(`${frontend.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "fake", prompt: "Count in Greek:", max_tokens: 10, temperature: 0, ...body }),
        signal: AbortSignal.timeout(BOUND),
      });
      return { status: response.status, body: await response.text() };
    };
    const migrations = async (): Promise<Record<string, number>> => {
      const metric = await frontend.metrics.migration.migrations.get();
      return Object.fromEntries(metric.values.map((v) => [String(v.labels.migration_type), v.value]));
    };
    return { frontend, seen, doom, complete, migrations };
  }

  const streamed = { stream: true, stream_options: { include_usage: true } };

  it("request migration - a crashed engine's stream continues on another worker with the same text and usage", async () => {
    const { seen, doom, complete, migrations } = await cluster();
    const undisturbed = parseSse((await complete(streamed)).body);
    expect(undisturbed.usage?.completion_tokens).toBe(10);
    seen.length = 0;
    doom.current = { at: 4, how: "crash" };
    const migrated = parseSse((await complete({ ...streamed, min_tokens: 6 })).body);
    expect(migrated.errors).toEqual([]);
    expect(migrated.text).toBe(undisturbed.text);
    expect(migrated.finishReason).toBe("length");
    expect(migrated.usage?.completion_tokens).toBe(10);
    expect(seen).toHaveLength(2);
    const [failed, continued] = seen as [Seen, Seen];
    expect(continued.worker).not.toBe(failed.worker);
    expect(continued.requestId).toBe(failed.requestId);
    expect(continued.request.tokenIds).toEqual([...failed.request.tokenIds, ...ANSWER.slice(0, 4)]);
    expect(continued.request.stop.maxTokens).toBe(6);
    expect(continued.request.stop.minTokens).toBe(2);
    expect(await migrations()).toEqual({ ongoing_request: 1 });
  });

  it("request migration - text the stop-string matcher held back at the failure is emitted once, after the continuation", async () => {
    // Three workers: each crash inhibits its worker, and the second still needs one to move to.
    const { doom, complete } = await cluster({ workers: 3 });
    // Held back at the failure: " gamma" may start the stop string " gamma omega"; the continuation proves it does not.
    const gammaEnds = tokenizer.encode(" alpha beta gamma", { addSpecialTokens: false }).length;
    const undisturbed = parseSse((await complete({ ...streamed, stop: [" gamma omega"] })).body);
    doom.current = { at: gammaEnds, how: "crash" };
    const migrated = parseSse((await complete({ ...streamed, stop: [" gamma omega"] })).body);
    expect(migrated.errors).toEqual([]);
    expect(migrated.text).toBe(undisturbed.text);
    expect(migrated.text.match(/ gamma/g)).toHaveLength(1);
    // And a stop string completed by the continuation still stops it.
    doom.current = { at: gammaEnds, how: "crash" };
    const stopped = parseSse((await complete({ ...streamed, stop: [" gamma delta"] })).body);
    expect(stopped.text).toBe(" alpha beta");
    expect(stopped.finishReason).toBe("stop");
  });

  it("request migration - a worker runtime stopped abruptly, or draining past its grace, hands its stream over (unary too)", async () => {
    const { seen, doom, complete } = await cluster({ workers: 3 });
    const undisturbed = JSON.parse((await complete({})).body) as { choices: { text: string }[] };
    for (const how of ["shutdown", "drain"] as const) {
      seen.length = 0;
      doom.current = { at: 3, how };
      const migrated = parseSse((await complete(streamed)).body);
      expect(migrated.errors).toEqual([]);
      expect(migrated.text).toBe(undisturbed.choices[0]?.text);
      expect(new Set(seen.map((s) => s.worker)).size).toBe(2);
    }
    // The one worker left (the others are gone) serves alone.
    const last = JSON.parse((await complete({})).body) as { choices: { text: string }[] };
    expect(last.choices[0]?.text).toBe(undisturbed.choices[0]?.text);
  });

  it("request migration - with no other worker to move to, the stream ends with the failure that cut it", async () => {
    const { doom, complete } = await cluster({ workers: 1 });
    doom.current = { at: 3, how: "crash" };
    const crashed = parseSse((await complete(streamed)).body);
    expect(crashed.finishReason).toBe("error");
    expect(crashed.errors.map((e) => e.code)).toEqual(["engine_error"]);
    // An engine crash does not inhibit a model's last worker: it restarts its engine and serves the next request.
    expect((await complete({})).status).toBe(200);
  });

  it("request migration - a worker runtime that goes away with no other worker ends the stream with shutting_down", async () => {
    const { doom, complete } = await cluster({ workers: 1 });
    doom.current = { at: 3, how: "shutdown" };
    const cut = parseSse((await complete(streamed)).body);
    expect(cut.finishReason).toBe("error");
    expect(cut.errors.map((e) => e.code)).toEqual(["shutting_down"]);
  });

  it("request migration - a stream that ends without a finish reason is migrated", async () => {
    const { doom, complete, migrations } = await cluster();
    const undisturbed = parseSse((await complete(streamed)).body);
    doom.current = { at: 5, how: "no_finish" };
    const migrated = parseSse((await complete(streamed)).body);
    expect(migrated.text).toBe(undisturbed.text);
    expect(await migrations()).toEqual({ ongoing_request: 1 });
  });

  it("request migration - with --migration-limit 0 the stream ends with an OpenAI error event", async () => {
    const { seen, doom, complete } = await cluster({ frontend: { migrationLimit: 0 } });
    doom.current = { at: 4, how: "crash" };
    const result = parseSse((await complete(streamed)).body);
    expect(result.finishReason).toBe("error");
    expect(result.errors).toHaveLength(1);
    expect(seen).toHaveLength(1);
  });

  it("request migration - a bad request the engine reports, and a request with n > 1, are not migrated", async () => {
    const { seen, doom, complete, migrations } = await cluster();
    doom.current = { at: 2, how: "bad_request" };
    const bad = parseSse((await complete(streamed)).body);
    expect(bad.finishReason).toBe("error");
    expect(bad.errors).toHaveLength(1);
    expect(seen).toHaveLength(1);
    seen.length = 0;
    doom.current = { at: 2, how: "crash" };
    const several = parseSse((await complete({ ...streamed, n: 2 })).body);
    expect(several.errors).toHaveLength(1);
    expect(seen).toHaveLength(2);
    expect(await migrations()).toEqual({});
  });

  it("request migration - a new request whose worker failed before any token goes to another; the failed one is inhibited", async () => {
    const { frontend, seen, doom, complete, migrations } = await cluster();
    doom.current = { at: 0, how: "crash" };
    const result = parseSse((await complete(streamed)).body);
    expect(result.errors).toEqual([]);
    expect(result.usage?.completion_tokens).toBe(10);
    expect(await migrations()).toEqual({ new_request: 1 });
    const failed = seen[0]?.worker;
    // Inhibited: the next requests all go to the other worker, though round-robin would alternate.
    expect(frontend.models.get("fake")?.liveWorkers()).toHaveLength(1);
    seen.length = 0;
    await complete({});
    await complete({});
    expect(seen.map((s) => s.worker).filter((w) => w === failed)).toEqual([]);
  });
});

describe("request migration - continuation", () => {
  it("request migration - continuation appends the tokens, reduces the limits and drops a decode hand-off", () => {
    const request = {
      model: "m",
      tokenIds: [1, 2],
      sampling: {},
      stop: { maxTokens: 5, minTokens: 2, stopTokenIds: [9] },
      eosTokenIds: [0],
      output: {},
      disaggregation: { phase: "prefill" },
    } as PreprocessedRequest;
    expect(continuationOf(request, [7, 8, 6])).toEqual({
      model: "m",
      tokenIds: [1, 2, 7, 8, 6],
      sampling: {},
      stop: { maxTokens: 2, minTokens: 0, stopTokenIds: [9] },
      eosTokenIds: [0],
      output: {},
    });
    expect(continuationOf(request, [1, 1, 1, 1, 1])).toBeUndefined();
  });
});
