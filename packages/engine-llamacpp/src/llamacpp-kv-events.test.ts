import { type KvCacheEvent, KvIndexer, type WorkerLoadMetrics } from "@tdist/llm";
import { Context, withTimeout } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaCppEngine } from "./llamacpp-engine.js";
import { LLAMACPP_KV_BLOCK_SIZE } from "./llamacpp-options.js";
import { collect, GENERATE_BOUND_MS, request, tinyModelPath, tokensOf } from "./testing/llamacpp-fixtures.js";

const WORKER = "llamacpp-worker-1";
const blocks = (tokens: number): number => Math.floor(tokens / LLAMACPP_KV_BLOCK_SIZE);

/** A distinct prompt of `length` ordinary token ids. */
const prompt = (salt: number, length: number): number[] =>
  Array.from({ length }, (_, i) => 1000 + ((salt * 7919 + i * 104_729) % 20_000));

describe("llamacpp engine KV events and load metrics", () => {
  let engine: LlamaCppEngine;
  const events: KvCacheEvent[] = [];
  const loads: WorkerLoadMetrics[] = [];
  const indexer = new KvIndexer({ blockSize: LLAMACPP_KV_BLOCK_SIZE });

  /** Leading blocks of `tokens` the router's indexer believes the worker holds. */
  const matched = (tokens: number[]): number => indexer.findMatches(tokens).scores.get(WORKER) ?? 0;

  /** Polls until the indexer agrees (events travel one IPC hop and a publish behind the tokens). */
  const eventually = (what: string, check: () => boolean): Promise<void> =>
    withTimeout(what, GENERATE_BOUND_MS, undefined, async () => {
      while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
    });

  beforeAll(async () => {
    const modelPath = await tinyModelPath();
    engine = await withTimeout("starting the engine", 60_000, undefined, () =>
      LlamaCppEngine.start({
        modelPath,
        contextSize: 256,
        sequences: 2,
        events: {
          workerId: WORKER,
          publisher: {
            async publish(subject, payload) {
              if (subject === "load-metrics") {
                loads.push(payload as WorkerLoadMetrics);
                return;
              }
              expect(subject).toBe("kv-events");
              const event = payload as KvCacheEvent;
              events.push(event);
              indexer.applyEvent(event);
            },
          },
        },
      }),
    );
  }, 120_000);

  afterAll(async () => {
    await engine?.close();
  });

  it("llamacpp kv events - a request's prompt and evaluated output are stored under the router's block hashes", async () => {
    const first = prompt(1, 40);
    const outputs = await collect(engine, request(first, 30, { stop: { ignoreEos: true } }));
    const output = tokensOf(outputs);
    expect(output).toHaveLength(30);
    // The last sampled token is never evaluated: the sequence holds the prompt and the output before it.
    const held = [...first, ...output.slice(0, -1)];
    await eventually("the stored events", () => matched([...first, ...output]) === blocks(held.length));
    expect(events.every((event, i) => event.workerId === WORKER && event.eventId === i)).toBe(true);
    expect(events.every((event) => event.data.type === "stored")).toBe(true);

    // The conversation returns: its held prefix is reused and the router already knew it.
    const next = [...first, ...output, ...prompt(2, 20)];
    const returning = await collect(engine, request(next, 4, { stop: { ignoreEos: true } }));
    expect(returning[0]?.cachedTokens).toBe(held.length);
    await eventually("the returning turn's blocks", () => matched(next) === blocks(next.length + 3));
  });

  it("llamacpp kv events - a sequence reused for another prompt removes what it no longer holds", async () => {
    const before = indexer.stats().blocks;
    expect(before).toBeGreaterThan(0);
    const conversation = events.flatMap((event) => (event.data.type === "stored" ? event.data.blocks : []));
    // Two unrelated prompts take both sequences; the second of them evicts the first conversation.
    for (const salt of [3, 4]) await collect(engine, request(prompt(salt, 48), 2, { stop: { ignoreEos: true } }));
    await eventually("the removed events", () => events.some((event) => event.data.type === "removed"));
    await eventually("the index to follow", () => matched(prompt(3, 48)) === 3 && matched(prompt(4, 48)) === 3);
    const removed = new Set(events.flatMap((event) => (event.data.type === "removed" ? event.data.blockHashes : [])));
    expect(conversation.every((block) => removed.has(block.blockHash))).toBe(true);
    expect(indexer.stats().blocks).toBe(6);
  });

  it("llamacpp kv events - load metrics follow sequences running and waiting, their blocks and queued prefill", async () => {
    loads.length = 0;
    // Three requests on two sequences: one waits.
    const requests = [6, 7, 8].map((salt) => request(prompt(salt, 40), 40, { stop: { ignoreEos: true } }));
    await Promise.all(requests.map((req) => collect(engine, req)));
    await eventually("the idle report", () => loads.at(-1)?.activeSequences === 0);
    expect(loads.every((load) => load.workerId === WORKER && load.totalKvBlocks === (2 * 256) / 16)).toBe(true);
    expect(Math.max(...loads.map((load) => load.activeSequences))).toBe(2);
    expect(Math.max(...loads.map((load) => load.waitingSequences))).toBe(1);
    // Prompts queue 40 uncached tokens each; a running request holds up to 40 + 39 tokens, 5 blocks.
    expect(Math.max(...loads.map((load) => load.prefillTokensQueued))).toBeGreaterThanOrEqual(40);
    expect(Math.max(...loads.map((load) => load.activeKvBlocks))).toBeLessThanOrEqual(10);
    expect(loads.some((load) => load.activeKvBlocks === 10)).toBe(true);
    expect(loads.at(-1)).toMatchObject({ waitingSequences: 0, activeKvBlocks: 0, prefillTokensQueued: 0, kvUsage: 0 });
  });

  it("llamacpp kv events - a resync re-sends every held block after a cleared, numbered after the rest", async () => {
    const from = events.length;
    await withTimeout("the resync", GENERATE_BOUND_MS, undefined, () => engine.resyncKvEvents());
    const resent = events.slice(from);
    expect(resent[0]?.data).toEqual({ type: "cleared" });
    expect(resent.every((event, i) => event.eventId === from + i)).toBe(true);
    // The main indexer applied them too: same view as before; a fresh one rebuilds it from the resync alone.
    const fresh = new KvIndexer({ blockSize: LLAMACPP_KV_BLOCK_SIZE });
    for (const event of resent) fresh.applyEvent(event);
    expect(fresh.stats().blocks).toBe(indexer.stats().blocks);
    expect(fresh.stats().blocks).toBeGreaterThan(0);
    const held = [6, 7, 8].map((salt) => prompt(salt, 40)).filter((tokens) => matched(tokens) > 0);
    expect(held.length).toBeGreaterThan(0);
    for (const tokens of held) expect(fresh.findMatches(tokens).scores.get(WORKER)).toBe(matched(tokens));
  });

  it("llamacpp kv events - a crashed child's caches are cleared", async () => {
    const pid = engine.childPid as number;
    process.kill(pid, "SIGKILL");
    await eventually("the cleared event", () => events.at(-1)?.data.type === "cleared");
    expect(indexer.stats().blocks).toBe(0);
    await withTimeout("restart", 60_000, undefined, () => engine.ready());
    // The new child reports from scratch, with ids continuing.
    const fresh = prompt(5, 32);
    await collect(engine, request(fresh, 2, { stop: { ignoreEos: true } }), new Context());
    await eventually("the new child's events", () => matched(fresh) === 2);
    expect(events.every((event, i) => event.eventId === i)).toBe(true);
  });
});
