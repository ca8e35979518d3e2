import { copyFile, mkdtemp, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinTokenizerFiles, type EngineOutput, parseModelCard, Tokenizer } from "@tdist/llm";
import { Context, type Logger, TdistError, withTimeout } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGgufFile } from "./gguf-reader.js";
import { GgufWriter } from "./gguf-writer.js";
import { LlamaCppEngine } from "./llamacpp-engine.js";
import {
  collect,
  finishOf,
  GENERATE_BOUND_MS,
  prompts,
  request,
  TOKENIZER_SAMPLES,
  tinyModelPath,
  tokensOf,
} from "./testing/llamacpp-fixtures.js";
import { makeTinyModel } from "./tiny-model.js";

const START_BOUND_MS = 60_000;

let modelPath: string;
let engine: LlamaCppEngine;
let scratch: string;

/** A logger that keeps the lines the engine's child printed (logged at debug). */
function outputLogger(lines: string[]): Logger {
  const logger: Logger = {
    debug: (_obj, message) => void lines.push(message ?? ""),
    info: () => {},
    warn: () => {},
    error: () => {},
    child: () => logger,
  };
  return logger;
}
const childOutput: string[] = [];

const start = (options: Partial<Parameters<typeof LlamaCppEngine.start>[0]> = {}): Promise<LlamaCppEngine> =>
  withTimeout("starting the engine", START_BOUND_MS, undefined, () =>
    LlamaCppEngine.start({
      modelPath,
      contextSize: 256,
      sequences: 8,
      ...options,
    }),
  );

const bounded = <T>(what: string, fn: () => Promise<T>): Promise<T> =>
  withTimeout(what, GENERATE_BOUND_MS, undefined, fn);

async function startError(options: Parameters<typeof LlamaCppEngine.start>[0]): Promise<unknown> {
  try {
    const unexpected = await withTimeout("starting the engine", START_BOUND_MS, undefined, () =>
      LlamaCppEngine.start(options),
    );
    await unexpected.close();
    return undefined;
  } catch (err) {
    return err;
  }
}

beforeAll(async () => {
  modelPath = await tinyModelPath();
  scratch = await mkdtemp(join(tmpdir(), "tdist-llamacpp-test-"));
  engine = await start({ logger: outputLogger(childOutput) });
}, 120_000);

afterAll(async () => {
  await engine?.close();
  await rm(scratch, { recursive: true, force: true });
});

describe("llamacpp engine", () => {
  it("llamacpp engine - the card and tokenizer come from the GGUF and llama.cpp tokenizes like the frontend", async () => {
    const files = builtinTokenizerFiles("qwen3");
    const info = engine.modelInfo();
    expect(info.name).toBe("tdist-tiny-random");
    expect(info.contextSize).toBeGreaterThanOrEqual(256);
    expect(info.sequences).toBe(8);
    expect(info.eosTokenIds[0]).toBe(151645);
    expect(info.eosTokenIds).toContain(151643);
    expect(info.eosTokenIds).not.toContain(128247);

    const assets = engine.modelAssets();
    expect(assets.tokenizerJson).toBe(files.tokenizerJson);
    expect(assets.cardFields.chatTemplate).toBe(files.tokenizerConfig.chat_template);
    expect(assets.cardFields).toMatchObject({
      eosToken: "<|im_end|>",
      addBosToken: false,
      contextLength: info.contextSize,
    });
    const card = engine.modelCard({ name: "tiny" });
    expect(card).toMatchObject({ name: "tiny", engine: "llamacpp", limits: { maxSequences: 8 } });
    expect(
      parseModelCard(
        JSON.stringify({
          ...card,
          tokenizer: { source: { kind: "inline", tokenizerJson: "{}" }, sha256: "0".repeat(64) },
        }),
      ).name,
    ).toBe("tiny");

    const frontend = Tokenizer.fromFiles({
      tokenizerJson: assets.tokenizerJson,
      tokenizerConfig: files.tokenizerConfig,
    });
    for (const text of TOKENIZER_SAMPLES) {
      expect(await bounded("tokenize", () => engine.tokenize(text))).toEqual(frontend.encode(text));
    }
  });

  it("llamacpp engine - the built-in model loads without llama.cpp's token type warnings", () => {
    expect(childOutput.filter((line) => /control-type|bug in the model/.test(line))).toEqual([]);
  });

  it("llamacpp engine - output at temperature 0 is deterministic, and a fixed seed repeats", async () => {
    const [prompt] = prompts(1) as [number[]];
    const first = await collect(engine, request(prompt, 16));
    const second = await collect(engine, request(prompt, 16));
    expect(tokensOf(first)).toHaveLength(16);
    expect(tokensOf(second)).toEqual(tokensOf(first));
    expect(first[0]?.cachedTokens).toBe(0);
    // The second run reuses the cached prompt (all but the last token, whose logits it needs).
    expect(second[0]?.cachedTokens).toBe(prompt.length - 1);

    const seeded = (seed: number) => request(prompt, 16, { sampling: { temperature: 1, seed } });
    const a = tokensOf(await collect(engine, seeded(7)));
    const b = tokensOf(await collect(engine, seeded(7)));
    const c = tokensOf(await collect(engine, seeded(8)));
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
  });

  it("llamacpp engine - 8 concurrent requests give the same tokens as 8 sequential ones", async () => {
    // Prompts of different lengths: sequences at different positions decode together.
    const requests = prompts(8).map((prompt, i) =>
      request([...prompt.slice(0, 5), ...prompt.slice(4, 4 + i), ...prompt.slice(5)], 64),
    );
    const sequential: number[][] = [];
    for (const req of requests) sequential.push(tokensOf(await collect(engine, req)));
    const concurrent = await Promise.all(requests.map(async (req) => tokensOf(await collect(engine, req))));
    expect(concurrent).toEqual(sequential);
    expect(new Set(sequential.map((tokens) => tokens.join(","))).size).toBe(8);

    // Staggered: each request joins once the earlier ones decode, in reverse order, so
    // sequences of different lengths are in flight together.
    const staggered = await bounded("staggered requests", async () => {
      const running: Promise<number[]>[] = [];
      for (const req of [...requests].reverse()) {
        const stream = engine.generate(req, new Context())[Symbol.asyncIterator]();
        const tokens: number[] = [];
        for (let i = 0; i < 3; i++) {
          const next = await stream.next();
          if (!next.done) tokens.push(...next.value.tokenIds);
        }
        running.push(
          (async () => {
            for (let next = await stream.next(); !next.done; next = await stream.next())
              tokens.push(...next.value.tokenIds);
            return tokens;
          })(),
        );
      }
      return (await Promise.all(running)).reverse();
    });
    expect(staggered).toEqual(sequential);

    // Churn: 16 requests of different lengths, 8 in flight; each one that ends frees its
    // sequence to the next, so batches hold sequences in every order of arrival.
    const churn = prompts(16).map((prompt, i) => request([...prompt.slice(0, 4), ...prompt], 8 + ((i * 13) % 41)));
    const churnSequential: number[][] = [];
    for (const req of churn) churnSequential.push(tokensOf(await collect(engine, req)));
    const churnConcurrent = await bounded("16 requests, 8 in flight", async () => {
      const results: number[][] = [];
      let next = 0;
      const lane = async (): Promise<void> => {
        for (let i = next++; i < churn.length; i = next++) {
          results[i] = tokensOf(await collect(engine, churn[i] as (typeof churn)[number]));
        }
      };
      await Promise.all(Array.from({ length: 8 }, lane));
      return results;
    });
    expect(churnConcurrent).toEqual(churnSequential);
  });

  it("llamacpp engine - max tokens ends with length", async () => {
    const [prompt] = prompts(1) as [number[]];
    const outputs = await collect(engine, request(prompt, 5));
    expect(tokensOf(outputs)).toHaveLength(5);
    expect(finishOf(outputs)).toBe("length");
    const none = await collect(engine, request(prompt, 0));
    expect(none).toEqual([{ tokenIds: [], finishReason: "length", cachedTokens: 0 }]);
    // The context ends a sequence too: prompt plus output never exceed it (no context shift).
    const contextSize = engine.modelInfo().contextSize;
    const long = await collect(engine, request(prompt, 100_000, { stop: { ignoreEos: true } }));
    expect(finishOf(long)).toBe("length");
    expect(tokensOf(long)).toHaveLength(contextSize - prompt.length);
  });

  it("llamacpp engine - a stop token id ends with stop (included); min tokens defers it; eos is ignored on request", async () => {
    const [, prompt] = prompts(2) as [number[], number[]];
    const free = tokensOf(await collect(engine, request(prompt, 12)));
    const stopId = free[4] as number;
    const stopped = await collect(engine, request(prompt, 12, { stop: { stopTokenIds: [stopId] } }));
    expect(finishOf(stopped)).toBe("stop");
    expect(tokensOf(stopped)).toEqual(free.slice(0, free.indexOf(stopId) + 1));

    // eos ids from the request stop too, unless ignoreEos.
    const asEos = await collect(engine, request(prompt, 12, { eosTokenIds: [stopId] }));
    expect(finishOf(asEos)).toBe("stop");
    const ignored = await collect(engine, request(prompt, 12, { eosTokenIds: [stopId], stop: { ignoreEos: true } }));
    expect(finishOf(ignored)).toBe("length");
    expect(tokensOf(ignored)).toEqual(free);

    // The first token cannot be a stop token before min tokens are out.
    const firstId = free[0] as number;
    const deferred = tokensOf(
      await collect(engine, request(prompt, 6, { stop: { stopTokenIds: [firstId], minTokens: 3 } })),
    );
    expect(deferred[0]).not.toBe(firstId);
    expect(deferred.slice(0, 2)).not.toContain(firstId);
  });

  it("llamacpp engine - sampling options reach llama.cpp", async () => {
    const [, , prompt] = prompts(3) as [number[], number[], number[]];
    const greedy = tokensOf(await collect(engine, request(prompt, 24)));
    // top-k 1 leaves only the most likely token, whatever the temperature.
    const topK = tokensOf(
      await collect(engine, request(prompt, 24, { sampling: { temperature: 1.5, topK: 1, seed: 3 } })),
    );
    expect(topK).toEqual(greedy);
    // A huge repetition penalty rules out every token of the prompt and the output so far.
    const penalized = tokensOf(
      await collect(engine, request(prompt, 24, { sampling: { temperature: 0, repetitionPenalty: 100 } })),
    );
    expect(new Set(penalized).size).toBe(penalized.length);
    expect(penalized.some((id) => prompt.includes(id))).toBe(false);
  });

  it("llamacpp engine - unseeded sampling draws a fresh seed per request", async () => {
    const [prompt] = prompts(1) as [number[]];
    // Concurrent, so within one second: llama.cpp's own fallback seed (the time in seconds) would repeat.
    // At temperature 2 over a 151669-token vocabulary, 32 equal draws in a row are far beyond chance.
    const sampled = (extra: { seed?: number } = {}) =>
      request(prompt, 32, { sampling: { temperature: 2, ...extra }, stop: { ignoreEos: true } });
    const outputs = await Promise.all(
      Array.from({ length: 4 }, async () => tokensOf(await collect(engine, sampled()))),
    );
    expect(new Set(outputs.map((tokens) => tokens.join(","))).size).toBe(4);
    const [a, b] = await Promise.all([collect(engine, sampled({ seed: 5 })), collect(engine, sampled({ seed: 5 }))]);
    expect(tokensOf(b)).toEqual(tokensOf(a));
  });

  it("llamacpp engine - logit bias: -100 bans the greedy token, 100 forces a token", async () => {
    const [, , , prompt] = prompts(4) as [number[], number[], number[], number[]];
    const greedy = tokensOf(await collect(engine, request(prompt, 12)));
    const first = greedy[0] as number;
    const banned = tokensOf(
      await collect(
        engine,
        request(prompt, 12, { sampling: { temperature: 0, logitBias: { [String(first)]: -100 } } }),
      ),
    );
    expect(banned).not.toEqual(greedy);
    expect(banned).not.toContain(first);
    const forcedId = 9707;
    expect(greedy).not.toContain(forcedId);
    const forced = tokensOf(
      await collect(
        engine,
        request(prompt, 12, { sampling: { temperature: 0, logitBias: { [String(forcedId)]: 100 } } }),
      ),
    );
    expect(forced).toEqual(Array(12).fill(forcedId));
    // With min tokens, the bias holds before and after the minimum.
    const withMin = tokensOf(
      await collect(
        engine,
        request(prompt, 12, {
          sampling: { temperature: 0, logitBias: { [String(forcedId)]: 100 } },
          stop: { minTokens: 3, stopTokenIds: [first] },
        }),
      ),
    );
    expect(withMin).toEqual(Array(12).fill(forcedId));
    const invalid: Record<string, number>[] = [{ "151669": 1 }, { x: 1 }, { "5": 100.5 }];
    for (const logitBias of invalid) {
      const err = await collect(engine, request(prompt, 2, { sampling: { logitBias } })).catch((e: unknown) => e);
      expect(TdistError.is(err, "bad_request")).toBe(true);
    }
  });

  it("llamacpp engine - logprobs come with each token when asked for", async () => {
    const [prompt] = prompts(1) as [number[]];
    const outputs = await collect(engine, request(prompt, 4, { output: { logprobs: 3 } }));
    const logprobs = outputs.flatMap((output) => output.logprobs ?? []);
    expect(logprobs.map((entry) => entry.tokenId)).toEqual(tokensOf(outputs));
    for (const entry of logprobs) {
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(entry.top).toHaveLength(3);
      // Greedy: the chosen token is the most likely one.
      expect(entry.top?.[0]?.tokenId).toBe(entry.tokenId);
    }
    const plain = await collect(engine, request(prompt, 2));
    expect(plain.every((output) => output.logprobs === undefined)).toBe(true);
  });

  it("llamacpp engine - a kill mid-stream frees the sequence: the next 8 requests still fit", async () => {
    const contexts = Array.from({ length: 8 }, () => new Context());
    const streams = prompts(8).map((prompt, i) =>
      engine.generate(request(prompt, 200), contexts[i] as Context)[Symbol.asyncIterator](),
    );
    // All 8 sequences are busy once each stream has produced a token.
    await bounded("first tokens", () => Promise.all(streams.map((stream) => stream.next())));
    const ends = streams.map(async (stream) => {
      const rest: EngineOutput[] = [];
      for (let next = await stream.next(); !next.done; next = await stream.next()) rest.push(next.value);
      return rest;
    });
    for (const ctx of contexts) ctx.kill();
    const rests = await bounded("killed streams", () => Promise.all(ends));
    for (const rest of rests) expect(rest.every((output) => output.finishReason === undefined)).toBe(true);

    const after = await bounded("8 more requests", () =>
      Promise.all(prompts(8).map((prompt) => collect(engine, request(prompt, 4)))),
    );
    for (const outputs of after) expect(finishOf(outputs)).toBe("length");
    expect(engine.stats().activeRequests).toBe(0);
  });

  it("llamacpp engine - leaving the stream early frees the sequence too", async () => {
    const [prompt] = prompts(1) as [number[]];
    for (let round = 0; round < 10; round++) {
      await bounded("a short read", async () => {
        for await (const output of engine.generate(request(prompt, 100), new Context())) {
          if (output.tokenIds.length > 0) break;
        }
      });
    }
    const outputs = await bounded("8 requests", () =>
      Promise.all(prompts(8).map((p) => collect(engine, request(p, 2)))),
    );
    expect(outputs.map(finishOf)).toEqual(Array(8).fill("length"));
  });

  it("llamacpp engine - a graceful stop ends with cancelled", async () => {
    const [prompt] = prompts(1) as [number[]];
    const ctx = new Context();
    const outputs = await bounded("stopped stream", async () => {
      const seen: EngineOutput[] = [];
      for await (const output of engine.generate(request(prompt, 200), ctx)) {
        seen.push(output);
        if (seen.length === 2) ctx.stopGenerating();
      }
      return seen;
    });
    expect(finishOf(outputs)).toBe("cancelled");
    expect(tokensOf(outputs).length).toBeLessThan(200);
  });

  it("llamacpp engine - invalid requests are bad_request errors", async () => {
    const [prompt] = prompts(1) as [number[]];
    const invalid = [
      request([1, 2, 10_000_000], 4),
      request([], 4),
      request(Array(300).fill(9707), 4),
      request(prompt, -1),
      request(prompt, 4, { sampling: { temperature: -1 } }),
      request(prompt, 4, { output: { logprobs: 1000 } }),
    ];
    for (const req of invalid) {
      const err = await collect(engine, req).catch((e: unknown) => e);
      expect(TdistError.is(err, "bad_request")).toBe(true);
    }
  });
});

describe("llamacpp engine across processes", () => {
  let other: LlamaCppEngine;

  beforeAll(async () => {
    other = await start({ sequences: 2 });
  }, 120_000);

  afterAll(async () => {
    await other?.close();
  });

  it("llamacpp engine - export then import in another process continues like one process", async () => {
    const [, , prompt, secondPrompt] = prompts(4) as [number[], number[], number[], number[]];
    const reference = tokensOf(await collect(engine, request(prompt, 20)));
    const state = await bounded("export", () => engine.exportSequenceState(prompt));
    expect(state.tokenIds).toEqual(prompt.slice(0, -1));
    expect(state.data.byteLength).toBeGreaterThan(0);

    const continued = await collect(other, request(prompt, 20), new Context(), { kvState: state });
    expect(continued[0]?.cachedTokens).toBe(prompt.length - 1);
    expect(tokensOf(continued)).toEqual(reference);

    // Imported as a cached prefix, a matching request reuses it.
    const secondReference = tokensOf(await collect(engine, request(secondPrompt, 10)));
    const secondState = await bounded("export", () => engine.exportSequenceState(secondPrompt));
    expect(await bounded("import", () => other.importSequenceState(secondState))).toEqual({
      tokenCount: secondPrompt.length - 1,
    });
    const reused = await collect(other, request(secondPrompt, 10));
    expect(reused[0]?.cachedTokens).toBe(secondPrompt.length - 1);
    expect(tokensOf(reused)).toEqual(secondReference);

    // A state for another prompt, or from another model, is refused.
    const mismatch = await collect(other, request(secondPrompt, 4), new Context(), { kvState: state }).catch((e) => e);
    expect(TdistError.is(mismatch, "bad_request")).toBe(true);
    const foreign = { ...state, modelFingerprint: "0".repeat(64) };
    await expect(other.importSequenceState(foreign)).rejects.toSatisfy((err) => TdistError.is(err, "bad_request"));
  });

  it("llamacpp engine - a SIGKILLed child fails its requests with error, restarts, and serves the next request", async () => {
    const [prompt] = prompts(1) as [number[]];
    const pid = other.childPid as number;
    expect(pid).toBeGreaterThan(0);
    const outputs = await bounded("stream across the crash", async () => {
      const seen: EngineOutput[] = [];
      for await (const output of other.generate(request(prompt, 1000), new Context())) {
        seen.push(output);
        if (seen.length === 2) process.kill(pid, "SIGKILL");
      }
      return seen;
    });
    expect(finishOf(outputs)).toBe("error");
    expect(outputs.at(-1)?.error).toMatch(/llama.cpp engine process \d+ exited with signal SIGKILL/);
    // Load-time warnings are not the cause of a crash.
    expect(outputs.at(-1)?.error).not.toMatch(/control-type|load:/);

    await withTimeout("restart", START_BOUND_MS, undefined, () => other.ready());
    expect(other.state).toBe("running");
    expect(other.stats().restarts).toBe(1);
    expect(other.childPid).not.toBe(pid);
    const next = await collect(other, request(prompt, 4));
    expect(finishOf(next)).toBe("length");
    expect(tokensOf(next)).toHaveLength(4);
  });
});

describe("llamacpp engine with the GPT-2 vocabulary", () => {
  it("llamacpp engine - a gpt2-vocab tiny model tokenizes like the frontend and generates", async () => {
    const out = join(scratch, "gpt2.gguf");
    const made = await withTimeout("making the gpt2 model", START_BOUND_MS, undefined, () =>
      makeTinyModel({ out, vocab: "gpt2" }),
    );
    expect(made.vocabSize).toBe(50257);
    const output: string[] = [];
    const gpt2 = await start({ modelPath: out, logger: outputLogger(output) });
    expect(output.filter((line) => /control-type|bug in the model/.test(line))).toEqual([]);
    try {
      const files = builtinTokenizerFiles("gpt2");
      const assets = gpt2.modelAssets();
      expect(assets.tokenizerJson).toBe(files.tokenizerJson);
      expect(assets.cardFields.eosToken).toBe("<|endoftext|>");
      const frontend = Tokenizer.fromFiles({
        tokenizerJson: assets.tokenizerJson,
        tokenizerConfig: files.tokenizerConfig,
      });
      for (const text of TOKENIZER_SAMPLES) {
        expect(await bounded("tokenize", () => gpt2.tokenize(text))).toEqual(frontend.encode(text));
      }
      const outputs = await collect(gpt2, request(frontend.encode("Hello there, tiny model"), 8));
      expect(tokensOf(outputs)).toHaveLength(8);
      expect(tokensOf(outputs).every((id) => id >= 0 && id < 50257)).toBe(true);
    } finally {
      await gpt2.close();
    }
  });
});

describe("llamacpp engine with a bad model file", () => {
  it("llamacpp engine - a truncated GGUF is a bad_request naming the file", async () => {
    const info = await readGgufFile(modelPath);
    const path = join(scratch, "truncated.gguf");
    await copyFile(modelPath, path);
    await truncate(path, info.dataOffset + 1024);
    const err = await startError({ modelPath: path });
    expect(TdistError.is(err, "bad_request")).toBe(true);
    expect((err as Error).message).toContain(path);
    expect((err as Error).message).toMatch(/truncated/);

    const missing = await startError({ modelPath: join(scratch, "missing.gguf") });
    expect(TdistError.is(missing, "bad_request")).toBe(true);
  });

  it("llamacpp engine - a GGUF llama.cpp aborts on is a bad_request naming the file, without restarts", async () => {
    // No llama.feed_forward_length: llama.cpp aborts the process while loading.
    const path = join(scratch, "no-ffn.gguf");
    const tokens = ["a", "b", "c", "d"];
    await new GgufWriter()
      .addString("general.architecture", "llama")
      .addUint32("llama.context_length", 64)
      .addUint32("llama.embedding_length", 8)
      .addUint32("llama.block_count", 1)
      .addUint32("llama.attention.head_count", 2)
      .addFloat32("llama.attention.layer_norm_rms_epsilon", 1e-6)
      .addString("tokenizer.ggml.model", "gpt2")
      .addArray("tokenizer.ggml.tokens", "string", tokens)
      .addArray("tokenizer.ggml.token_type", "int32", [1, 1, 1, 1])
      .addArray("tokenizer.ggml.merges", "string", [])
      .addTensor("token_embd.weight", [8, 4], (out) => out.fill(0.1))
      .addTensor("output_norm.weight", [8], (out) => out.fill(1))
      .write(path);
    const err = await startError({ modelPath: path });
    expect(TdistError.is(err, "bad_request")).toBe(true);
    expect((err as Error).message).toContain(path);
  });
});
