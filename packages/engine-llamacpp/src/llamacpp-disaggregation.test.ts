import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type EngineOutput, type KvCacheEvent, KvIndexer, type PreprocessedRequest } from "@tdist/llm";
import {
  DistributedRuntime,
  type KvOfferOutcome,
  type KvTransferHandle,
  type KvTransferOffer,
  type KvTransferPlane,
  MemoryDiscoveryStore,
  type RuntimeOptions,
  TdistError,
  withTimeout,
} from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamaCppEngine } from "./llamacpp-engine.js";
import { LLAMACPP_KV_BLOCK_SIZE } from "./llamacpp-options.js";
import { collect, finishOf, GENERATE_BOUND_MS, request, tinyModelPath, tokensOf } from "./testing/llamacpp-fixtures.js";

const START_BOUND_MS = 60_000;
const CONTEXT = 2048;
const MAX_TOKENS = 24;

/** A chat-like prompt of `length` tokens, distinct per `salt`. */
function promptOf(length: number, salt: number): number[] {
  const filler = Array.from({ length: length - 9 }, (_, i) => 1000 + ((i * 7919 + salt * 104_729) % 90_000));
  return [151644, 872, 198, 9707, ...filler, 151645, 198, 151644, 77091, 198];
}

/** A plane that hands every offer it makes to the test, which waits for their release. */
function recordingPlane(plane: KvTransferPlane): { plane: KvTransferPlane; offers: KvTransferOffer[] } {
  const offers: KvTransferOffer[] = [];
  return {
    offers,
    plane: {
      kind: plane.kind,
      async offer(source, options) {
        const offer = await plane.offer(source, options);
        offers.push(offer);
        return offer;
      },
      fetch: (handle, options) => plane.fetch(handle, options),
      get openOffers() {
        return plane.openOffers;
      },
      close: () => plane.close(),
    },
  };
}

interface Side {
  runtime: DistributedRuntime;
  engine: LlamaCppEngine;
  tempDir: string;
  offers: KvTransferOffer[];
  /** Leading blocks of `tokens` a KV router's indexer, fed this engine's KV events, believes it holds. */
  matchedBlocks(tokens: number[]): number;
}

let sides = 0;

async function startSide(modelPath: string, sequences: number, runtimeOptions: RuntimeOptions = {}): Promise<Side> {
  const runtime = await DistributedRuntime.create({
    env: {},
    discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
    ...runtimeOptions,
  });
  const tempDir = await mkdtemp(join(tmpdir(), "tdist-llamacpp-disagg-"));
  const { plane, offers } = recordingPlane(runtime.kvTransfer);
  const indexer = new KvIndexer({ blockSize: LLAMACPP_KV_BLOCK_SIZE });
  const workerId = `worker-${++sides}`;
  const events = {
    workerId,
    publisher: {
      async publish(subject: string, payload: unknown) {
        if (subject === "kv-events") indexer.applyEvent(payload as KvCacheEvent);
      },
    },
  };
  const engine = await withTimeout("starting the engine", START_BOUND_MS, undefined, () =>
    LlamaCppEngine.start({ modelPath, contextSize: CONTEXT, sequences, kvTransfer: plane, tempDir, events }),
  );
  const matchedBlocks = (tokens: number[]): number => indexer.findMatches(tokens).scores.get(workerId) ?? 0;
  return { runtime, engine, tempDir, offers, matchedBlocks };
}

async function stopSide(side: Side | undefined): Promise<void> {
  if (side === undefined) return;
  await side.engine.close();
  await side.runtime.shutdown({ graceMs: 500 });
  await rm(side.tempDir, { recursive: true, force: true });
}

/** The files in the engine's private temp dir (its only entry under `side.tempDir`). */
async function stateFiles(side: Side): Promise<string[]> {
  const [dir, ...others] = await readdir(side.tempDir);
  expect(others).toEqual([]);
  return readdir(join(side.tempDir, dir as string));
}

/** Every offer the side made so far, once released. */
function offerOutcomes(side: Side): Promise<KvOfferOutcome[]> {
  return withTimeout("offers released", GENERATE_BOUND_MS, undefined, () =>
    Promise.all(side.offers.map((offer) => offer.settled)),
  );
}

interface Disaggregated {
  tokens: number[];
  finishReason: string | undefined;
  prefill: EngineOutput[];
  decode: EngineOutput[];
}

/** What the frontend does for a remote prefill: the prefill phase on one engine, then the decode phase on the other. */
async function disaggregated(
  prefill: LlamaCppEngine,
  decode: LlamaCppEngine,
  req: PreprocessedRequest,
  route: (handle: KvTransferHandle) => KvTransferHandle | Promise<KvTransferHandle> = (handle) => handle,
): Promise<Disaggregated> {
  const prefillOutputs = await collect(prefill, { ...req, disaggregation: { phase: "prefill" } });
  expect(prefillOutputs).toHaveLength(1);
  const [first] = prefillOutputs as [EngineOutput];
  if (first.finishReason !== undefined) {
    return { tokens: first.tokenIds, finishReason: first.finishReason, prefill: prefillOutputs, decode: [] };
  }
  expect(first.tokenIds).toHaveLength(1);
  const handle = first.kvTransfer as KvTransferHandle;
  const decodeRequest: PreprocessedRequest = {
    ...req,
    tokenIds: [...req.tokenIds, ...first.tokenIds],
    stop: { ...req.stop, maxTokens: req.stop.maxTokens - 1 },
    disaggregation: {
      phase: "decode",
      kvTransfer: await route(handle),
      kvTokens: req.tokenIds.length,
      prefillWorkerId: "P",
    },
  };
  const decodeOutputs = await collect(decode, decodeRequest);
  return {
    tokens: [...first.tokenIds, ...tokensOf(decodeOutputs)],
    finishReason: finishOf(decodeOutputs),
    prefill: prefillOutputs,
    decode: decodeOutputs,
  };
}

// Over TCP the handle loses its process-local id, so the fetch dials the prefill side's listener.
const overTcp = ({ address, ...handle }: KvTransferHandle): KvTransferHandle => ({
  ...handle,
  address: { tcp: address.tcp as string },
});

/** Polls until `check` holds (KV events travel one IPC hop and a publish behind the tokens). */
const eventually = (what: string, check: () => boolean): Promise<void> =>
  withTimeout(what, GENERATE_BOUND_MS, undefined, async () => {
    while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
  });

let modelPath: string;
let reference: LlamaCppEngine;

/** The aggregated answer, from an engine that sees no disaggregated request. */
async function aggregated(req: PreprocessedRequest): Promise<number[]> {
  return tokensOf(await collect(reference, req));
}

beforeAll(async () => {
  modelPath = await tinyModelPath();
  reference = await withTimeout("starting the engine", START_BOUND_MS, undefined, () =>
    LlamaCppEngine.start({ modelPath, contextSize: CONTEXT, sequences: 4 }),
  );
}, 120_000);

afterAll(async () => {
  await reference?.close();
});

describe("llamacpp disaggregation in one process", () => {
  let prefill: Side;
  let decode: Side;

  beforeAll(async () => {
    // Different sequence counts: the state is re-laid out for the receiving context.
    prefill = await startSide(modelPath, 2, { kvTransfer: { kind: "local" } });
    decode = await startSide(modelPath, 4, { kvTransfer: { kind: "local" } });
  }, 120_000);

  afterAll(async () => {
    await stopSide(prefill);
    await stopSide(decode);
  });

  it("llamacpp disaggregation - greedy output over prefill and decode equals the aggregated output for short, ~100 and ~1000-token prompts", async () => {
    for (const [salt, length] of [10, 100, 1000].entries()) {
      const req = request(promptOf(length, salt), MAX_TOKENS, { stop: { ignoreEos: true } });
      const expected = await aggregated(req);
      const result = await disaggregated(prefill.engine, decode.engine, req);
      expect(result.tokens).toEqual(expected);
      expect(result.finishReason).toBe("length");
      expect(result.prefill[0]?.kvTransfer?.byteCount).toBeGreaterThan(0);
      expect(result.decode[0]?.kvImport).toBe("fetched");
      // The whole prompt came with the state: only the first output token was evaluated here.
      expect(result.decode[0]?.cachedTokens).toBe(length);
      // Both sequences hold the prompt, and KV routers hear it from both.
      const promptBlocks = Math.floor(length / LLAMACPP_KV_BLOCK_SIZE);
      await eventually("the prompt's KV events", () =>
        [prefill, decode].every((side) => side.matchedBlocks(req.tokenIds) === promptBlocks),
      );
    }
    expect((await offerOutcomes(prefill)).map((outcome) => outcome.result)).toEqual(["sent", "sent", "sent"]);
    expect(await stateFiles(prefill)).toEqual([]);
    expect(await stateFiles(decode)).toEqual([]);
  });

  it("llamacpp disaggregation - four requests at once give the aggregated outputs", async () => {
    const reqs = [0, 1, 2, 3].map((i) =>
      request(promptOf(90 + 20 * i, 100 + i), MAX_TOKENS, { stop: { ignoreEos: true } }),
    );
    const expected = await Promise.all(reqs.map(aggregated));
    const results = await Promise.all(reqs.map((req) => disaggregated(prefill.engine, decode.engine, req)));
    expect(results.map((result) => result.tokens)).toEqual(expected);
    expect(results.map((result) => result.decode[0]?.kvImport)).toEqual(["fetched", "fetched", "fetched", "fetched"]);
    await offerOutcomes(prefill);
    expect(await stateFiles(prefill)).toEqual([]);
    expect(await stateFiles(decode)).toEqual([]);
  });

  it("llamacpp disaggregation - a state already fetched, released before the fetch, or of another prompt falls back to a local prefill", async () => {
    const req = request(promptOf(120, 7), MAX_TOKENS, { stop: { ignoreEos: true } });
    const expected = await aggregated(req);

    // Gone: someone else fetched it first (the offer serves one fetch).
    const gone = await disaggregated(prefill.engine, decode.engine, req, async (handle) => {
      let bytes = 0;
      for await (const chunk of prefill.runtime.kvTransfer.fetch(handle)) bytes += chunk.byteLength;
      expect(bytes).toBe(handle.byteCount);
      return handle;
    });
    expect(gone.tokens).toEqual(expected);
    expect(gone.decode[0]?.kvImport).toBe("fallback");

    // Withdrawn: the prefill side released it before the fetch.
    const released = await disaggregated(prefill.engine, decode.engine, req, async (handle) => {
      const offer = prefill.offers.find((candidate) => candidate.handle.transferId === handle.transferId);
      await offer?.release();
      return handle;
    });
    expect(released.tokens).toEqual(expected);
    expect(released.decode[0]?.kvImport).toBe("fallback");

    // Another prompt's state (a frontend bug): refused after its header, prefilled here.
    const otherPrompt = request(promptOf(120, 8), MAX_TOKENS, { stop: { ignoreEos: true } });
    const [other] = await collect(prefill.engine, { ...otherPrompt, disaggregation: { phase: "prefill" } });
    const mismatched = await collect(decode.engine, {
      ...req,
      tokenIds: [...req.tokenIds, expected[0] as number],
      stop: { ...req.stop, maxTokens: MAX_TOKENS - 1 },
      disaggregation: {
        phase: "decode",
        kvTransfer: other?.kvTransfer as KvTransferHandle,
        kvTokens: req.tokenIds.length,
        prefillWorkerId: "P",
      },
    });
    expect([expected[0], ...tokensOf(mismatched)]).toEqual(expected);
    expect(mismatched[0]?.kvImport).toBe("fallback");

    await offerOutcomes(prefill);
    expect(await stateFiles(prefill)).toEqual([]);
    expect(await stateFiles(decode)).toEqual([]);
  });

  it("llamacpp disaggregation - a first token that ends the request answers with its finish reason and offers nothing", async () => {
    const prompt = promptOf(60, 9);
    const expected = await aggregated(request(prompt, 2, { stop: { ignoreEos: true } }));
    const offersBefore = prefill.offers.length;

    const one = await disaggregated(prefill.engine, decode.engine, request(prompt, 1, { stop: { ignoreEos: true } }));
    expect(one).toMatchObject({ tokens: expected.slice(0, 1), finishReason: "length", decode: [] });
    expect(one.prefill[0]?.kvTransfer).toBeUndefined();

    const stop = await disaggregated(
      prefill.engine,
      decode.engine,
      request(prompt, MAX_TOKENS, { stop: { ignoreEos: true, stopTokenIds: expected.slice(0, 1) } }),
    );
    expect(stop).toMatchObject({ tokens: expected.slice(0, 1), finishReason: "stop", decode: [] });
    expect(stop.prefill[0]?.kvTransfer).toBeUndefined();

    expect(prefill.offers.length).toBe(offersBefore);
    expect(await stateFiles(prefill)).toEqual([]);
  });

  it("llamacpp disaggregation - an unfetched offer expires after its ttl, close releases the rest, and the decode side prefills", async () => {
    const extra = await startSide(modelPath, 1, { kvTransfer: { kind: "local", ttlMs: 300 } });
    try {
      const req = request(promptOf(100, 12), MAX_TOKENS, { stop: { ignoreEos: true } });
      const expected = await aggregated(req);
      const prefillOnce = async (): Promise<EngineOutput> => {
        const [first] = await collect(extra.engine, { ...req, disaggregation: { phase: "prefill" } });
        expect(first?.kvTransfer).toBeDefined();
        return first as EngineOutput;
      };
      await prefillOnce();
      expect((await offerOutcomes(extra)).map((outcome) => outcome.result)).toEqual(["expired"]);
      expect(await stateFiles(extra)).toEqual([]);

      const first = await prefillOnce();
      await withTimeout("closing", GENERATE_BOUND_MS, undefined, () => extra.engine.close());
      expect((await offerOutcomes(extra)).map((outcome) => outcome.result)).toEqual(["expired", "released"]);
      expect(await readdir(extra.tempDir)).toEqual([]);
      const decoded = await collect(decode.engine, {
        ...req,
        tokenIds: [...req.tokenIds, ...first.tokenIds],
        stop: { ...req.stop, maxTokens: MAX_TOKENS - 1 },
        disaggregation: {
          phase: "decode",
          kvTransfer: first.kvTransfer as KvTransferHandle,
          kvTokens: req.tokenIds.length,
          prefillWorkerId: "P",
        },
      });
      expect([...first.tokenIds, ...tokensOf(decoded)]).toEqual(expected);
      expect(decoded[0]?.kvImport).toBe("fallback");
    } finally {
      await stopSide(extra);
    }
  });

  it("llamacpp disaggregation - malformed phases are bad requests; a prefill phase needs a KV transfer plane", async () => {
    const prompt = promptOf(20, 13);
    const bad: PreprocessedRequest[] = [
      request(prompt, 4, { disaggregation: { phase: "middle" } as never }),
      request(prompt, 4, {
        disaggregation: { phase: "decode", kvTransfer: null as never, kvTokens: 19, prefillWorkerId: "P" },
      }),
      request(prompt, 4, {
        disaggregation: {
          phase: "decode",
          kvTransfer: { transferId: "x", address: {}, byteCount: 1, checksum: "crc32:00000000" },
          kvTokens: 20,
          prefillWorkerId: "P",
        },
      }),
    ];
    for (const req of bad) {
      const err = await collect(decode.engine, req).catch((e: unknown) => e);
      expect(TdistError.is(err, "bad_request")).toBe(true);
    }
    const err = await collect(reference, request(prompt, 4, { disaggregation: { phase: "prefill" } })).catch(
      (e: unknown) => e,
    );
    expect(TdistError.is(err, "bad_request")).toBe(true);
  });
});

describe("llamacpp disaggregation over TCP", () => {
  let prefill: Side;
  let decode: Side;

  beforeAll(async () => {
    prefill = await startSide(modelPath, 2, { kvTransfer: { kind: "tcp", host: "127.0.0.1" } });
    decode = await startSide(modelPath, 2, { kvTransfer: { kind: "tcp", host: "127.0.0.1" } });
  }, 120_000);

  afterAll(async () => {
    await stopSide(prefill);
    await stopSide(decode);
  });

  it("llamacpp disaggregation - over the TCP listener the output equals the aggregated output and state size grows with the prompt", async () => {
    const sizes: number[] = [];
    for (const [salt, length] of [100, 1000].entries()) {
      const req = request(promptOf(length, 200 + salt), MAX_TOKENS, { stop: { ignoreEos: true } });
      const expected = await aggregated(req);
      const result = await disaggregated(prefill.engine, decode.engine, req, overTcp);
      expect(result.prefill[0]?.kvTransfer?.address.tcp).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(result.tokens).toEqual(expected);
      expect(result.decode[0]?.kvImport).toBe("fetched");
      sizes.push(result.prefill[0]?.kvTransfer?.byteCount ?? 0);
    }
    // The KV of exactly the prompt's tokens: ten times the tokens, about ten times the bytes.
    const [small, large] = sizes as [number, number];
    expect(large / small).toBeGreaterThan(8);
    expect(large / small).toBeLessThan(11);
    expect((await offerOutcomes(prefill)).map((outcome) => outcome.result)).toEqual(["sent", "sent"]);
    expect(await stateFiles(prefill)).toEqual([]);
    expect(await stateFiles(decode)).toEqual([]);
  });
});
