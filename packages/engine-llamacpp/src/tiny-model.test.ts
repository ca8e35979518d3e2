import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinTokenizerFiles, Tokenizer } from "@tdist/llm";
import { TdistError, withTimeout } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeGgufModel, rebuildTokenizerJson } from "./gguf-model-assets.js";
import { readGgufFile } from "./gguf-reader.js";
import { LlamaTokenType } from "./gguf-types.js";
import type { ModelProgress } from "./model-progress.js";
import { TOKENIZER_SAMPLES } from "./testing/llamacpp-fixtures.js";
import { ensureTinyModel, makeTinyModel, TINY_MODEL_NAME, tinyModelFileName } from "./tiny-model.js";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tdist-tiny-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const bounded = <T>(what: string, fn: () => Promise<T>): Promise<T> => withTimeout(what, 60_000, undefined, fn);

async function sha256Of(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

describe("tiny model", () => {
  it("tiny model - the same seed gives the same file, another seed another", async () => {
    const small = { layers: 1, width: 16, heads: 2, embedTokenizerJson: false };
    const [a, b, c] = await bounded("making three models", () =>
      Promise.all([
        makeTinyModel({ ...small, out: join(dir, "a.gguf"), seed: 3 }),
        makeTinyModel({ ...small, out: join(dir, "b.gguf"), seed: 3 }),
        makeTinyModel({ ...small, out: join(dir, "c.gguf"), seed: 4 }),
      ]),
    );
    expect(a.vocabSize).toBe(151669);
    expect(await sha256Of(a.path)).toBe(await sha256Of(b.path));
    expect(await sha256Of(a.path)).not.toBe(await sha256Of(c.path));
  });

  it("tiny model - carries llama metadata, the Qwen3 vocabulary and chat template, tied embeddings", async () => {
    const out = join(dir, "meta.gguf");
    await bounded("making a model", () => makeTinyModel({ out, layers: 2, width: 32, heads: 4, kvHeads: 2 }));
    const info = await readGgufFile(out);
    const files = builtinTokenizerFiles("qwen3");
    const meta = info.metadata;
    expect(meta.get("general.architecture")).toBe("llama");
    expect(meta.get("general.name")).toBe(TINY_MODEL_NAME);
    expect(meta.get("llama.block_count")).toBe(2);
    expect(meta.get("llama.embedding_length")).toBe(32);
    expect(meta.get("llama.feed_forward_length")).toBe(128);
    expect(meta.get("llama.attention.head_count_kv")).toBe(2);
    expect(meta.get("tokenizer.ggml.model")).toBe("gpt2");
    expect(meta.get("tokenizer.ggml.pre")).toBe("qwen2");
    expect(meta.get("tokenizer.ggml.eos_token_id")).toBe(151645);
    expect(meta.get("tokenizer.chat_template")).toBe(files.tokenizerConfig.chat_template);
    expect(meta.get("tokenizer.huggingface.json")).toBe(files.tokenizerJson);
    const tokens = meta.get("tokenizer.ggml.tokens") as string[];
    expect(tokens).toHaveLength(151669);
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(tokens[151644]).toBe("<|im_start|>");
    // llama.cpp takes "</s>" for an end-of-generation marker and warns on load unless it is a control token.
    const types = meta.get("tokenizer.ggml.token_type") as number[];
    expect(types[tokens.indexOf("</s>")]).toBe(LlamaTokenType.control);
    expect(types[tokens.indexOf("hello")]).toBe(LlamaTokenType.normal);
    expect(info.tensors.map((t) => t.name)).not.toContain("output.weight");
    expect(info.tensors.find((t) => t.name === "token_embd.weight")?.dims).toEqual([32, 151669]);
    expect(info.tensors.find((t) => t.name === "blk.1.attn_k.weight")?.dims).toEqual([32, 16]);

    const description = describeGgufModel(info);
    expect(description.tokenizerJson).toBe(files.tokenizerJson);
    expect(description.tokenizerRebuilt).toBe(false);
    expect(description.eosToken).toBe("<|im_end|>");
    expect(description.addBosToken).toBe(false);
  });

  it("tiny model - the tokenizer.json rebuilt from the GGUF vocabulary encodes like the original", async () => {
    const out = join(dir, "rebuild.gguf");
    await bounded("making a model", () =>
      makeTinyModel({ out, layers: 1, width: 16, heads: 2, embedTokenizerJson: false }),
    );
    const info = await readGgufFile(out);
    expect(describeGgufModel(info).tokenizerRebuilt).toBe(true);
    const files = builtinTokenizerFiles("qwen3");
    const original = Tokenizer.fromFiles({
      tokenizerJson: files.tokenizerJson,
      tokenizerConfig: files.tokenizerConfig,
    });
    const rebuilt = Tokenizer.fromFiles({
      tokenizerJson: rebuildTokenizerJson(info),
      tokenizerConfig: files.tokenizerConfig,
    });
    for (const text of TOKENIZER_SAMPLES) {
      const ids = original.encode(text);
      expect(rebuilt.encode(text)).toEqual(ids);
      expect(rebuilt.decode(ids)).toBe(original.decode(ids));
    }
  });

  it("tiny model - rejects invalid shapes", async () => {
    await expect(makeTinyModel({ out: join(dir, "x.gguf"), width: 30, heads: 4 })).rejects.toSatisfy((err) =>
      TdistError.is(err, "invalid_option"),
    );
    await expect(makeTinyModel({ out: join(dir, "x.gguf"), heads: 4, kvHeads: 3 })).rejects.toSatisfy((err) =>
      TdistError.is(err, "invalid_option"),
    );
  });

  it("tiny model - ensureTinyModel generates once into the cache, concurrent calls included", async () => {
    const cacheDir = join(dir, "cache");
    const progress: ModelProgress[] = [];
    const [first, second] = await bounded("ensuring the model", () =>
      Promise.all([
        ensureTinyModel({ cacheDir, onProgress: (event) => progress.push(event) }),
        ensureTinyModel({ cacheDir }),
      ]),
    );
    expect(first).toBe(second);
    // The first-run generation reports its progress, ending at 100% of the file.
    const size = (await stat(first)).size;
    expect(progress.length).toBeGreaterThan(2);
    expect(progress.every((event) => event.phase === "generate" && event.model === first)).toBe(true);
    expect(progress.every((event) => event.totalBytes === size)).toBe(true);
    expect(progress.map((event) => event.bytes)).toEqual(
      [...progress.map((event) => event.bytes)].sort((a, b) => a - b),
    );
    expect(progress.at(-1)?.bytes).toBe(size);
    expect(first).toBe(join(cacheDir, "models", tinyModelFileName()));
    expect(tinyModelFileName()).toMatch(/^tdist-tiny-random-qwen3-vocab/);
    expect(await readdir(join(cacheDir, "models"))).toEqual([tinyModelFileName()]);
    const cachedProgress: ModelProgress[] = [];
    const again = await bounded("ensuring the model again", () =>
      ensureTinyModel({ cacheDir, onProgress: (event) => cachedProgress.push(event) }),
    );
    expect(again).toBe(first);
    expect(cachedProgress).toEqual([]);
  });
});
