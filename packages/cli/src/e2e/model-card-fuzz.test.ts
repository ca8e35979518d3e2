/**
 * Malformed model cards next to a real echo worker's, on memory and etcd
 * discovery: mutations of the real card (fields missing, wrong types,
 * negative and non-integer numbers, huge strings, deep nesting, `__proto__`
 * keys, text that is not JSON), cards whose tokenizer fails its sha256 or
 * names an endpoint nobody serves. The frontend keeps watching, lists only
 * the real model, serves it, warns once per bad card and counts them.
 */
import { serveEchoWorker } from "@tdist/engine-echo";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import {
  DistributedRuntime,
  type Logger,
  MemoryDiscoveryStore,
  mulberry32,
  type RuntimeOptions,
  withTimeout,
} from "@tdist/runtime";
import { type EtcdServer, startEtcd } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const NS = "cardfuzz";
const BOUND_MS = 15_000;
const SEED = 0x63617264;

interface LogLine {
  level: string;
  fields: Record<string, unknown>;
  message: string | undefined;
}

function recordingLogger(lines: LogLine[]): Logger {
  const at =
    (level: string) =>
    (fields: object, message?: string): void => {
      lines.push({ level, fields: fields as Record<string, unknown>, message });
    };
  const logger: Logger = {
    debug: () => {},
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => logger,
  };
  return logger;
}

type Card = Record<string, unknown> & { tokenizer: Record<string, unknown> & { source: Record<string, unknown> } };

/** Seeded mutations of a real card, each invalid in one place, with what the frontend should make of it. */
function malformedCard(next: () => number, real: Card, serial: number): { value: string; parses: boolean } {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  const card = JSON.parse(JSON.stringify(real)) as Card;
  // Parse-valid cards get a name of their own, so they are refused for their tokenizer, not shadowed by the real model.
  const name = `bad-${serial}`;
  let deep: unknown = 1;
  for (let i = 0; i < 3_000; i++) deep = [deep];
  const mutations: (() => string | { parses: string })[] = [
    () => pick(["", "{", "null", "[]", "42", '"card"', "\u0000", "x".repeat(1 << 20)]),
    () => JSON.stringify({ ...card, name: pick<unknown>([undefined, "", 7, null, ["echo"], "n".repeat(5_000)]) }),
    () => JSON.stringify({ ...card, engine: pick<unknown>([undefined, 1, {}]) }),
    () => JSON.stringify({ ...card, tokenizer: pick<unknown>([undefined, null, "tok", []]) }),
    () =>
      JSON.stringify({ ...card, tokenizer: { ...card.tokenizer, sha256: pick<unknown>([1, "abc", "Z".repeat(64)]) } }),
    () =>
      JSON.stringify({
        ...card,
        tokenizer: {
          ...card.tokenizer,
          source: pick<unknown>([
            null,
            { kind: "inline" },
            { kind: "inline", tokenizerJson: 5 },
            { kind: "endpoint", namespace: "UPPER", component: "c", endpoint: "e" },
            { kind: "endpoint", namespace: "a" },
            { kind: "file", path: "/etc/passwd" },
          ]),
        },
      }),
    () => JSON.stringify({ ...card, eosTokenIds: pick<unknown>([undefined, "2", [1.5], [-1], [null], { 0: 1 }]) }),
    () => JSON.stringify({ ...card, contextLength: pick<unknown>([0, -1, 1.5, "4096", null, 2 ** 60]) }),
    () => JSON.stringify({ ...card, kvBlockSize: pick<unknown>([0, -16, 0.5, "16", [], 2 ** 60]) }),
    () =>
      JSON.stringify({
        ...card,
        limits: pick<unknown>([undefined, null, 5, { totalKvBlocks: -1 }, { maxSequences: 0.5 }]),
      }),
    () => JSON.stringify({ ...card, role: pick<unknown>(["leader", 1, null]) }),
    () => JSON.stringify({ ...card, chatTemplate: pick<unknown>([5, {}, []]), addBosToken: "yes" }),
    () => JSON.stringify({ ...card, limits: deep }),
    () => `{"__proto__":{"polluted":true,"name":"echo"},"engine":"echo","tokenizer":${JSON.stringify(card.tokenizer)}}`,
    () => ({
      parses: JSON.stringify({
        ...card,
        name,
        tokenizer: { ...card.tokenizer, sha256: "0".repeat(64) },
      }),
    }),
    () => ({
      parses: JSON.stringify({
        ...card,
        name,
        tokenizer: {
          sha256: card.tokenizer.sha256,
          source: { kind: "endpoint", namespace: NS, component: "nobody", endpoint: "tokenizer" },
        },
      }),
    }),
  ];
  const result = pick(mutations)();
  return typeof result === "string" ? { value: result, parses: false } : { value: result.parses, parses: true };
}

async function fuzzCards(runtimeOptions: () => RuntimeOptions, rounds: number): Promise<void> {
  const runtimes: DistributedRuntime[] = [];
  const runtime = async (): Promise<DistributedRuntime> => {
    const created = await DistributedRuntime.create(runtimeOptions());
    runtimes.push(created);
    return created;
  };
  const logs: LogLine[] = [];
  let frontend: HttpFrontend | undefined;
  try {
    const worker = await runtime();
    await serveEchoWorker(worker, { namespace: NS, modelName: "echo" });
    frontend = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      namespace: NS,
      logger: recordingLogger(logs),
    });
    await frontend.models.waitForModel("echo", BOUND_MS);
    const [registered] = await worker.discovery.list(`v1/models/${NS}/`);
    if (registered === undefined) throw new Error("the echo worker registered no card");
    const real = JSON.parse(registered.value) as Card;
    const keyBase = registered.key.slice(0, registered.key.lastIndexOf("/") + 1);
    const next = mulberry32(SEED);
    let invalid = 0;
    let refusedTokenizers = 0;
    const complete = async (prompt: string): Promise<unknown> => {
      const response = await fetch(`${frontend?.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "echo", prompt, max_tokens: 20 }),
        signal: AbortSignal.timeout(BOUND_MS),
      });
      expect(response.status).toBe(200);
      return ((await response.json()) as { choices: { text: string }[] }).choices[0]?.text;
    };
    for (let round = 0; round < rounds; round++) {
      const { value, parses } = malformedCard(next, real, round);
      await withTimeout("put", 5_000, undefined, () =>
        worker.discovery.put(`${keyBase}${(0xc000 + round).toString(16)}`, value),
      );
      if (parses) refusedTokenizers++;
      else invalid++;
      if (round % 10 === 0) expect(await complete(`round ${round}`)).toBe(`round ${round}`);
    }
    const metrics = async (): Promise<string> => {
      const response = await fetch(`${frontend?.url}/metrics`, { signal: AbortSignal.timeout(BOUND_MS) });
      return response.text();
    };
    const invalidLine = `tdist_discovery_malformed_records_total{kind="model_card"} ${invalid}`;
    await withTimeout("the frontend to count every bad card", BOUND_MS, undefined, async () => {
      while (!(await metrics()).includes(invalidLine)) await new Promise((resolve) => setTimeout(resolve, 20));
    });
    expect(logs.filter((line) => line.message === "ignoring invalid model card")).toHaveLength(invalid);
    for (const line of logs) expect(JSON.stringify(line.fields).length).toBeLessThan(4_000);
    const listed = (await (await fetch(`${frontend.url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(listed.data.map((model) => model.id)).toEqual(["echo"]);
    expect(await complete("still serving")).toBe("still serving");
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
    expect(refusedTokenizers).toBeGreaterThan(0);
    const cards = /dynamo_frontend_malformed_model_cards_total (\d+)/.exec(await metrics());
    expect(Number(cards?.[1])).toBeGreaterThanOrEqual(invalid);

    // A card whose tokenizer fails verification, registered first under a model's name, does not keep the
    // model from the worker that then serves it for real.
    const lying = { ...real, name: "late", tokenizer: { ...real.tokenizer, sha256: "0".repeat(64) } };
    await worker.discovery.put(`${keyBase}d000`, JSON.stringify(lying));
    await withTimeout("the lying card to fail", BOUND_MS, undefined, async () => {
      while (!logs.some((line) => line.message?.startsWith("cannot load model") && line.fields.model === "late")) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    });
    await serveEchoWorker(await runtime(), { namespace: NS, modelName: "late" });
    await frontend.models.waitForModel("late", BOUND_MS);
  } finally {
    await frontend?.close({ graceMs: 200 });
    for (const created of runtimes.reverse()) await created.shutdown({ graceMs: 200 });
  }
}

describe("model card fuzz", () => {
  it("model card fuzz - on memory discovery bad cards are skipped with one warning each and counted; the real model serves", async () => {
    const store = new MemoryDiscoveryStore();
    await fuzzCards(() => ({ env: {}, discovery: { kind: "memory", store } }), 120);
  });

  describe("on etcd", () => {
    let etcd: EtcdServer;
    beforeAll(async () => {
      etcd = await startEtcd();
    });
    afterAll(async () => {
      await etcd?.stop();
    });

    it("model card fuzz - on etcd bad cards are skipped with one warning each and counted; the real model serves", async () => {
      await fuzzCards(
        () => ({
          env: {},
          discovery: { kind: "etcd", endpoints: [etcd.endpoint] },
          requestPlane: { kind: "tcp", host: "127.0.0.1" },
        }),
        40,
      );
    });
  });
});
