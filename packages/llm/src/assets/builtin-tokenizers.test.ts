import { existsSync } from "node:fs";
import { join } from "node:path";
import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { sha256Hex } from "../preprocessor/tokenizer.js";
import { type BuiltinTokenizerName, builtinTokenizerDirectory, builtinTokenizerFiles } from "./builtin-tokenizers.js";

describe("builtin tokenizers", () => {
  it("builtin tokenizers - qwen3 ships the real tokenizer files with their sha256", () => {
    const files = builtinTokenizerFiles("qwen3");
    expect(files.tokenizerJson.length).toBeGreaterThan(10_000_000);
    expect(files.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(files.sha256).toBe(sha256Hex(files.tokenizerJson));
    expect(files.tokenizerConfig.eos_token).toBe("<|im_end|>");
    expect(typeof files.tokenizerConfig.chat_template).toBe("string");
    expect(files.eosTokenIds).toEqual([151645, 151643]);
    expect(files.contextLength).toBeGreaterThan(0);
  });

  it("builtin tokenizers - gpt2 ships GPT-2's vocabulary without a chat template", () => {
    const files = builtinTokenizerFiles("gpt2");
    expect(files.sha256).toBe(sha256Hex(files.tokenizerJson));
    expect(files.tokenizerConfig.eos_token).toBe("<|endoftext|>");
    expect(files.tokenizerConfig.chat_template).toBeUndefined();
    expect(files.eosTokenIds).toEqual([50256]);
    expect(files.contextLength).toBe(1024);
  });

  it("builtin tokenizers - files are read once and callers get their own eos array", () => {
    const first = builtinTokenizerFiles("qwen3");
    first.eosTokenIds.push(1);
    const second = builtinTokenizerFiles("qwen3");
    expect(second.tokenizerJson).toBe(first.tokenizerJson);
    expect(second.eosTokenIds).toEqual([151645, 151643]);
  });

  it("builtin tokenizers - the directory holds tokenizer.json and tokenizer_config.json", () => {
    const directory = builtinTokenizerDirectory("qwen3");
    expect(existsSync(join(directory, "tokenizer.json"))).toBe(true);
    expect(existsSync(join(directory, "tokenizer_config.json"))).toBe(true);
  });

  it("builtin tokenizers - an unknown name is a bad_request", () => {
    for (const name of ["llama", "toString"]) {
      let error: unknown;
      try {
        builtinTokenizerFiles(name as BuiltinTokenizerName);
      } catch (err) {
        error = err;
      }
      expect(TdistError.is(error, "bad_request")).toBe(true);
    }
  });
});
