import { serveMockerWorker } from "@tdist/engine-mocker";
import { HttpFrontend, PREFILL_WORKER_HEADER, type ServedModel, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, delay, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const LONG = "Summarise the history of the printing press, from movable type to offset lithography. ".repeat(6);
const SHORT = "Hi";
const ENGINE = { speedupRatio: 100 };

describe("disaggregated serving - embedded mocker workers and the openai client", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  let frontend: HttpFrontend;
  let openai: OpenAI;
  let decode: ServedModel;
  let prefill: ServedModel;

  const runtime = async () => {
    const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(rt);
    return rt;
  };
  const prefillWorker = async () =>
    serveMockerWorker(await runtime(), { namespace: "disagg", role: "prefill", engine: ENGINE });
  const prefillCount = (count: number) =>
    withTimeout(`${count} prefill workers`, 10_000, undefined, async () => {
      while (frontend.models.prefillWorkers("mocker").size !== count) await delay(5);
    });
  const decisions = async (): Promise<Record<string, number>> => {
    const metric = await frontend.metrics.disaggregation.decisions.get();
    return Object.fromEntries(metric.values.map((v) => [String(v.labels.outcome), v.value]));
  };

  beforeAll(async () => {
    decode = await serveMockerWorker(await runtime(), { namespace: "disagg", role: "decode", engine: ENGINE });
    prefill = await prefillWorker();
    // The same engine aggregated, under another name: what the split must reproduce.
    await serveMockerWorker(await runtime(), { namespace: "disagg", modelName: "mocker-agg", engine: ENGINE });
    frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      router: "kv",
      disaggregation: { minUncachedTokens: 32 },
    });
    await frontend.models.waitForModel("mocker");
    await frontend.models.waitForModel("mocker-agg");
    await prefillCount(1);
    openai = new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 10_000 });
  });

  afterAll(async () => {
    await frontend?.close();
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 500 })));
  });

  it("disaggregated serving - a long prompt goes prefill worker then decode worker, headers name both, usage counts the whole answer", async () => {
    const { data, response } = await openai.completions
      .create({ model: "mocker", prompt: LONG, max_tokens: 12, temperature: 0 })
      .withResponse();
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBe(prefill.instanceId);
    expect(response.headers.get("x-tdist-worker")).toBe(decode.instanceId);
    expect(data.usage?.completion_tokens).toBe(12);
    expect(data.choices[0]?.finish_reason).toBe("length");
    const aggregated = await openai.completions.create({
      model: "mocker-agg",
      prompt: LONG,
      max_tokens: 12,
      temperature: 0,
    });
    expect(data.choices[0]?.text).toBe(aggregated.choices[0]?.text);
  });

  it("disaggregated serving - a streamed chat over the split reassembles and reports usage", async () => {
    const { data: stream, response } = await openai.chat.completions
      .create({
        model: "mocker",
        messages: [{ role: "user", content: LONG }],
        max_tokens: 8,
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBe(prefill.instanceId);
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(usage?.completion_tokens).toBe(8);
  });

  it("disaggregated serving - a short prompt is served by the decode worker alone", async () => {
    const before = await decisions();
    const { data, response } = await openai.completions
      .create({ model: "mocker", prompt: SHORT, max_tokens: 4 })
      .withResponse();
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBeNull();
    expect(response.headers.get("x-tdist-worker")).toBe(decode.instanceId);
    expect(data.usage?.completion_tokens).toBe(4);
    expect((await decisions()).local).toBe((before.local ?? 0) + 1);
  });

  it("disaggregated serving - prefill workers join and leave under load and every request succeeds", async () => {
    let stopLoad = false;
    // 0: one prefill worker; 1: the second joined; 2: the first left; 3: none left.
    let phase = 0;
    const served: { phase: number; prefillWorker: string | null }[] = [];
    const failures: unknown[] = [];
    const client = async (n: number) => {
      for (let i = 0; !stopLoad; i++) {
        const startedIn = phase;
        try {
          const { data, response } = await openai.completions
            .create({ model: "mocker", prompt: `${n}-${i} ${LONG}`, max_tokens: 6 })
            .withResponse();
          if (data.usage?.completion_tokens !== 6) failures.push(data.usage);
          served.push({ phase: startedIn, prefillWorker: response.headers.get(PREFILL_WORKER_HEADER) });
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const servedIn = (p: number, worker: string | null) =>
      served.some((s) => s.phase === p && s.prefillWorker === worker);
    const load = Promise.all([0, 1, 2, 3].map(client));
    const second = await prefillWorker();
    await prefillCount(2);
    phase = 1;
    await withTimeout("the new prefill worker used", 10_000, undefined, async () => {
      while (!servedIn(1, second.instanceId)) await delay(10);
    });
    await prefill.stop({ graceMs: 2_000 });
    await prefillCount(1);
    phase = 2;
    await withTimeout("requests after the first left", 10_000, undefined, async () => {
      while (!servedIn(2, second.instanceId)) await delay(10);
    });
    await second.stop({ graceMs: 2_000 });
    await prefillCount(0);
    phase = 3;
    await withTimeout("requests with none left", 10_000, undefined, async () => {
      while (!servedIn(3, null)) await delay(10);
    });
    stopLoad = true;
    await withTimeout("load done", 20_000, undefined, () => load);
    expect(failures).toEqual([]);
    expect(served.filter((s) => s.phase >= 2 && s.prefillWorker === prefill.instanceId)).toEqual([]);
    expect(served.filter((s) => s.phase === 3 && s.prefillWorker !== null)).toEqual([]);
  });

  it("disaggregated serving - with no prefill worker left the decode worker serves aggregated", async () => {
    await prefillCount(0);
    const before = await decisions();
    const { data, response } = await openai.completions
      .create({ model: "mocker", prompt: LONG, max_tokens: 4 })
      .withResponse();
    expect(response.headers.get(PREFILL_WORKER_HEADER)).toBeNull();
    expect(data.usage?.completion_tokens).toBe(4);
    expect((await decisions()).skipped_no_prefill_workers).toBe((before.skipped_no_prefill_workers ?? 0) + 1);
  });
});
