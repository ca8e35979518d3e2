import {
  type Context,
  DistributedRuntime,
  isKvTransferFallback,
  MemoryDiscoveryStore,
  TdistError,
} from "@tdist/runtime";
import { afterEach, describe, expect, it } from "vitest";
import type { HttpFrontendOptions } from "../frontend/http-frontend.js";
import { HttpFrontend } from "../frontend/http-frontend.js";
import { TokenizerPipeline } from "../frontend/tokenizer-pipeline.js";
import { loadTokenizer } from "../preprocessor/tokenizer.js";
import type { WorkerRole } from "../protocol/disaggregation.js";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { builtinModelAssets } from "../worker/builtin-model.js";
import { type ServedModel, serveModel } from "../worker/serve-model.js";
import { PREFILL_WORKER_HEADER } from "./prefill-router.js";

const assets = builtinModelAssets();
/** Token ids the fake engines answer with: the prefill worker's first token, then the decode worker's. */
const PREFILL_TOKEN = 1000;
const DECODE_TOKEN = 2000;
/** The fake prefill worker's prefix-cache hit on every prompt. */
const PREFILL_CACHED_TOKENS = 4;
const LONG_PROMPT = "the quick brown fox jumps over the lazy dog ".repeat(6);
const SHORT_PROMPT = "hi";
const BOUND = 10_000;

/** `promise`, or a rejection after `ms`: every await in these tests is bounded. */
async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not done after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

type PrefillBehaviour = "offer" | "finish" | "fail" | "withdraw" | "hold";

interface Worker {
  served: ServedModel;
  runtime: DistributedRuntime;
  requests: PreprocessedRequest[];
  /** For `hold`: lets the held prefills answer. */
  release(): void;
}

/**
 * A prefill worker as the protocol asks: one output, the first token and
 * the offer of the prompt's "KV" (4 bytes a token). `withdraw` offers and
 * withdraws at once (the decode worker's fetch then fails); `hold` waits
 * for `release()` before answering.
 */
function prefillEngine(
  runtime: DistributedRuntime,
  behaviour: PrefillBehaviour,
  worker: { requests: PreprocessedRequest[]; held: Promise<void> },
) {
  return async function* (request: PreprocessedRequest, _ctx: Context): AsyncGenerator<EngineOutput> {
    worker.requests.push(request);
    if (request.disaggregation?.phase !== "prefill") throw new TdistError("bad_request", "not a prefill request");
    if (behaviour === "fail") throw new TdistError("internal", "prefill engine failed");
    if (behaviour === "hold") await worker.held;
    if (behaviour === "finish") {
      yield { tokenIds: [PREFILL_TOKEN], finishReason: "stop" };
      return;
    }
    const offer = await runtime.kvTransfer.offer(new Uint8Array(request.tokenIds.length * 4).fill(7), { ttlMs: BOUND });
    if (behaviour === "withdraw") await offer.release();
    yield { tokenIds: [PREFILL_TOKEN], kvTransfer: offer.handle, cachedTokens: PREFILL_CACHED_TOKENS };
  };
}

/** A decode worker: fetches the handle when it has one (or says it fell back), then generates `maxTokens`. */
function decodeEngine(runtime: DistributedRuntime, worker: { requests: PreprocessedRequest[] }) {
  return async function* (request: PreprocessedRequest, ctx: Context): AsyncGenerator<EngineOutput> {
    worker.requests.push(request);
    let kvImport: EngineOutput["kvImport"];
    const phase = request.disaggregation;
    if (phase?.phase === "decode") {
      try {
        let bytes = 0;
        for await (const chunk of runtime.kvTransfer.fetch(phase.kvTransfer, {
          signal: ctx.signal,
          timeoutMs: BOUND,
        })) {
          bytes += chunk.byteLength;
        }
        kvImport = bytes === phase.kvTokens * 4 ? "fetched" : "fallback";
      } catch (err) {
        if (!isKvTransferFallback(err)) throw err;
        kvImport = "fallback";
      }
    }
    for (let i = 0; i < request.stop.maxTokens; i++) {
      const output: EngineOutput = { tokenIds: [DECODE_TOKEN + i] };
      if (i === 0 && kvImport !== undefined) output.kvImport = kvImport;
      // As the real engines do: a fetched cache reads as cached prompt tokens on the decode worker.
      if (i === 0 && kvImport === "fetched" && phase?.phase === "decode") output.cachedTokens = phase.kvTokens;
      if (i === request.stop.maxTokens - 1) output.finishReason = "length";
      yield output;
    }
  };
}

describe("prefill router", () => {
  const cleanups: (() => Promise<void>)[] = [];
  const store = () => new MemoryDiscoveryStore();

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function runtimeOn(discovery: MemoryDiscoveryStore): Promise<DistributedRuntime> {
    const runtime = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store: discovery } });
    cleanups.push(() => runtime.shutdown({ graceMs: 200 }));
    return runtime;
  }

  async function worker(
    discovery: MemoryDiscoveryStore,
    role: WorkerRole,
    behaviour: PrefillBehaviour = "offer",
  ): Promise<Worker> {
    const runtime = await runtimeOn(discovery);
    let release = (): void => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const state = { requests: [] as PreprocessedRequest[], held };
    const served = await serveModel(runtime, {
      namespace: "disagg",
      tokenizerJson: assets.tokenizerJson,
      engine: role === "prefill" ? prefillEngine(runtime, behaviour, state) : decodeEngine(runtime, state),
      card: { name: "fake", engine: "fake", ...assets.cardFields, kvBlockSize: 4, limits: {}, role },
    });
    return { served, runtime, requests: state.requests, release };
  }

  async function frontendOn(
    discovery: MemoryDiscoveryStore,
    options: Partial<HttpFrontendOptions> = {},
  ): Promise<HttpFrontend> {
    const frontend = await HttpFrontend.start({
      runtime: await runtimeOn(discovery),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      disaggregation: { minUncachedTokens: 8 },
      ...options,
    });
    cleanups.push(() => frontend.close({ graceMs: 200 }));
    return frontend;
  }

  async function complete(frontend: HttpFrontend, prompt: string, body: Record<string, unknown> = {}) {
    const response = await fetch(`${frontend.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake", prompt, max_tokens: 4, ...body }),
      signal: AbortSignal.timeout(BOUND),
    });
    const text = await withTimeout(response.text(), BOUND);
    return {
      response,
      text,
      json: () =>
        JSON.parse(text) as {
          usage: { completion_tokens: number; prompt_tokens_details?: { cached_tokens: number } };
          choices: { text: string; finish_reason: string }[];
        },
    };
  }

  async function decisions(frontend: HttpFrontend): Promise<Record<string, number>> {
    const metric = await frontend.metrics.disaggregation.decisions.get();
    return Object.fromEntries(metric.values.map((v) => [String(v.labels.outcome), v.value]));
  }

  async function waitForPrefillWorkers(frontend: HttpFrontend, count: number): Promise<void> {
    await withTimeout(
      (async () => {
        for (;;) {
          const entry = frontend.models.get("fake");
          if (entry !== undefined && entry.prefillWorkers.size === count && entry.prefillRouter !== undefined) return;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })(),
      BOUND,
    );
  }

  it("prefill router - a long prompt is prefilled on the prefill worker and decoded on the decode worker", async () => {
    const discovery = store();
    const prefill = await worker(discovery, "prefill");
    const decode = await worker(discovery, "decode");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);

    const { response, json } = await complete(frontend, LONG_PROMPT);
    expect(response.status).toBe(200);
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBe(prefill.served.instanceId);
    expect(response.headers.get("x-tdist-worker")).toBe(decode.served.instanceId);
    const body = json();
    expect(body.usage.completion_tokens).toBe(4);
    // The prefill worker's cache hit, not the decode worker's import of the whole prompt.
    expect(body.usage.prompt_tokens_details?.cached_tokens).toBe(PREFILL_CACHED_TOKENS);
    expect(body.choices[0]?.finish_reason).toBe("length");

    const prefillRequest = prefill.requests[0] as PreprocessedRequest;
    const decodeRequest = decode.requests[0] as PreprocessedRequest;
    expect(prefillRequest.disaggregation).toEqual({ phase: "prefill" });
    expect(decodeRequest.tokenIds).toEqual([...prefillRequest.tokenIds, PREFILL_TOKEN]);
    expect(decodeRequest.stop.maxTokens).toBe(3);
    expect(decodeRequest.disaggregation).toMatchObject({
      phase: "decode",
      kvTokens: prefillRequest.tokenIds.length,
      prefillWorkerId: prefill.served.instanceId,
    });
    expect(await decisions(frontend)).toEqual({ remote: 1 });
    const health = await fetch(`${frontend.url}/health`, { signal: AbortSignal.timeout(BOUND) });
    expect(((await health.json()) as { models: unknown[] }).models).toEqual([
      { name: "fake", status: "healthy", workers: 1, live_workers: 1, prefill_workers: 1, live_prefill_workers: 1 },
    ]);
    const bytes = await frontend.metrics.disaggregation.kvTransferBytes.get();
    expect(bytes.values[0]?.value).toBe(prefillRequest.tokenIds.length * 4);
  });

  it("prefill router - a streamed answer starts with the prefill worker's token and goes on from the decode worker", async () => {
    const discovery = store();
    const prefill = await worker(discovery, "prefill");
    await worker(discovery, "decode");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);

    const { response, text } = await complete(frontend, LONG_PROMPT, {
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 3,
    });
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBe(prefill.served.instanceId);
    const events = text
      .split("\n\n")
      .map((line) => line.replace(/^data: /, ""))
      .filter((data) => data.startsWith("{"))
      .map((data) => JSON.parse(data) as { choices: { text: string }[]; usage?: { completion_tokens: number } });
    const tokensText = events.flatMap((event) => event.choices.map((choice) => choice.text)).join("");
    const tokenizer = loadTokenizer({ tokenizerJson: assets.tokenizerJson });
    expect(tokensText).toBe(tokenizer.decode([PREFILL_TOKEN, DECODE_TOKEN, DECODE_TOKEN + 1]));
    expect(events.at(-1)?.usage?.completion_tokens).toBe(3);
  });

  it("prefill router - a short prompt is served on the decode worker alone", async () => {
    const discovery = store();
    const prefill = await worker(discovery, "prefill");
    const decode = await worker(discovery, "decode");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);

    const { response, json } = await complete(frontend, SHORT_PROMPT);
    expect(response.status).toBe(200);
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBeNull();
    expect(json().usage.completion_tokens).toBe(4);
    expect(prefill.requests).toHaveLength(0);
    expect(decode.requests[0]?.disaggregation).toBeUndefined();
    expect(await decisions(frontend)).toEqual({ local: 1 });
  });

  it("prefill router - a prefill token that ends the request is the whole answer", async () => {
    const discovery = store();
    await worker(discovery, "prefill", "finish");
    const decode = await worker(discovery, "decode");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);

    const { json } = await complete(frontend, LONG_PROMPT);
    expect(json().usage.completion_tokens).toBe(1);
    expect(json().choices[0]?.finish_reason).toBe("stop");
    expect(decode.requests).toHaveLength(0);
  });

  it("prefill router - a failing prefill worker makes the decode worker prefill (fallback)", async () => {
    const discovery = store();
    await worker(discovery, "prefill", "fail");
    const decode = await worker(discovery, "decode");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);

    const { response, json } = await complete(frontend, LONG_PROMPT);
    expect(response.status).toBe(200);
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBeNull();
    expect(json().usage.completion_tokens).toBe(4);
    expect(decode.requests[0]?.disaggregation).toBeUndefined();
    expect(await decisions(frontend)).toEqual({ remote: 1, fallback: 1 });
  });

  it("prefill router - a decode worker that cannot fetch the KV cache reports a fallback and still answers", async () => {
    const discovery = store();
    await worker(discovery, "prefill", "withdraw");
    await worker(discovery, "decode");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);

    const { json } = await complete(frontend, LONG_PROMPT);
    expect(json().usage.completion_tokens).toBe(4);
    expect(await decisions(frontend)).toEqual({ remote: 1, fallback: 1 });
    expect((await frontend.metrics.disaggregation.kvTransferBytes.get()).values).toEqual([]);
  });

  it("prefill router - decode workers serve alone until a prefill worker joins, and again after it leaves", async () => {
    const discovery = store();
    const decode = await worker(discovery, "decode");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);

    expect((await complete(frontend, LONG_PROMPT)).response.status).toBe(200);
    expect(await decisions(frontend)).toEqual({ skipped_no_prefill_workers: 1 });

    const prefill = await worker(discovery, "prefill");
    await waitForPrefillWorkers(frontend, 1);
    const remote = await complete(frontend, LONG_PROMPT);
    expect(remote.response.headers.get(PREFILL_WORKER_HEADER)).toBe(prefill.served.instanceId);

    await prefill.served.stop({ graceMs: 200 });
    await waitForPrefillWorkers(frontend, 0);
    expect((await complete(frontend, LONG_PROMPT)).response.status).toBe(200);
    expect(await decisions(frontend)).toEqual({ skipped_no_prefill_workers: 2, remote: 1 });
    expect(decode.requests.map((r) => r.disaggregation?.phase)).toEqual([undefined, "decode", undefined]);
  });

  it("prefill router - aggregated workers without prefill workers are served as before, uncounted", async () => {
    const discovery = store();
    const aggregated = await worker(discovery, "aggregated");
    const frontend = await frontendOn(discovery);
    await frontend.models.waitForModel("fake", BOUND);
    expect(frontend.models.get("fake")?.prefillRouter).toBeUndefined();
    expect((await complete(frontend, LONG_PROMPT)).response.status).toBe(200);
    expect(aggregated.requests[0]?.disaggregation).toBeUndefined();
    expect(await decisions(frontend)).toEqual({});
  });

  it("prefill router - a model with only prefill workers is not listed nor served", async () => {
    const discovery = store();
    const prefill = await worker(discovery, "prefill");
    const frontend = await frontendOn(discovery);
    await withTimeout(
      (async () => {
        while (frontend.models.prefillWorkers("fake").size === 0) await new Promise((r) => setTimeout(r, 5));
      })(),
      BOUND,
    );
    const models = await fetch(`${frontend.url}/v1/models`, { signal: AbortSignal.timeout(BOUND) });
    expect(((await models.json()) as { data: unknown[] }).data).toEqual([]);
    const { response } = await complete(frontend, LONG_PROMPT);
    expect(response.status).toBe(404);
    expect(prefill.requests).toHaveLength(0);
  });

  it("prefill router - a busy prefill worker (KV router's predicted queue) leaves the prefill to the decode worker", async () => {
    const discovery = store();
    const prefill = await worker(discovery, "prefill", "hold");
    await worker(discovery, "decode");
    const frontend = await frontendOn(discovery, {
      router: "kv",
      disaggregation: { minUncachedTokens: 8, prefillBusyTokens: 0 },
    });
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);

    const first = complete(frontend, LONG_PROMPT);
    await withTimeout(
      (async () => {
        while (prefill.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      })(),
      BOUND,
    );
    const queue = await frontend.metrics.disaggregation.prefillQueue.get();
    expect(queue.values.find((v) => v.labels.worker_type === "prefill")?.value).toBeGreaterThan(0);
    const second = await complete(frontend, "a different prompt that is long enough to go remote otherwise");
    expect(second.response.headers.get(PREFILL_WORKER_HEADER)).toBeNull();
    prefill.release();
    expect((await first).response.headers.get(PREFILL_WORKER_HEADER)).toBe(prefill.served.instanceId);
    expect(await decisions(frontend)).toEqual({ remote: 1, local: 1 });
  });

  it("prefill router - a client that leaves during the remote prefill frees both workers' predicted load", async () => {
    const discovery = store();
    const prefill = await worker(discovery, "prefill", "hold");
    await worker(discovery, "decode");
    const frontend = await frontendOn(discovery, { router: "kv" });
    await frontend.models.waitForModel("fake", BOUND);
    await waitForPrefillWorkers(frontend, 1);
    const queued = async (workerType: string): Promise<number> => {
      const gauge = await frontend.metrics.disaggregation.prefillQueue.get();
      return gauge.values.filter((v) => v.labels.worker_type === workerType).reduce((sum, v) => sum + v.value, 0);
    };

    const client = new AbortController();
    const request = fetch(`${frontend.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake", prompt: LONG_PROMPT, max_tokens: 4 }),
      signal: client.signal,
    }).catch((err: unknown) => err);
    await withTimeout(
      (async () => {
        while (prefill.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      })(),
      BOUND,
    );
    expect(await queued("prefill")).toBeGreaterThan(0);
    expect(await queued("decode")).toBeGreaterThan(0);
    client.abort();
    await withTimeout(request, BOUND);
    await withTimeout(
      (async () => {
        while ((await queued("prefill")) + (await queued("decode")) > 0) await new Promise((r) => setTimeout(r, 5));
      })(),
      BOUND,
    );
    prefill.release();
  });
});
