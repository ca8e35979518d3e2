import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { describe, expect, it } from "vitest";
import { builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import { speedUpPreTokenizers } from "./pre-tokenizer-speedups.js";

type Encoder = { encode(text: string): { ids: number[] }; pre_tokenizer: (text: string) => string[] };

const samples = [
  "Hello, world! It's 2026 and we're here.",
  "  leading and trailing spaces  \n\n\tindent\r\nwindows",
  "café naïve — “quotes” 東京都 日本語のテキスト 🙂👍🏽 mixed ascii後",
  "lone surrogate \ud800 here",
  "",
];

function gpt2StyleJson(addPrefixSpace: boolean): object {
  const vocab: Record<string, number> = {};
  for (const ch of "ĠabcdefghijklmnopqrstuvwxyzHW,!") vocab[ch] = Object.keys(vocab).length;
  return {
    version: "1.0",
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    model: { type: "BPE", vocab, merges: [], ignore_merges: false },
    post_processor: null,
    decoder: { type: "ByteLevel" },
  };
}

describe("pre-tokenizer speed-ups", () => {
  it("pre-tokenizer speed-ups - Qwen3 ids and pre-tokens match the library's own mapping", () => {
    const json = JSON.parse(builtinTokenizerFiles("qwen3").tokenizerJson) as object;
    const plain = new HfTokenizer(json, {}) as unknown as Encoder;
    const fast = new HfTokenizer(json, {}) as unknown as Encoder;
    speedUpPreTokenizers(fast);
    for (const text of samples) {
      expect(fast.pre_tokenizer(text)).toEqual(plain.pre_tokenizer(text));
      expect(fast.encode(text).ids).toEqual(plain.encode(text).ids);
    }
  });

  it("pre-tokenizer speed-ups - its own regex and a prefix space behave as the library's", () => {
    for (const addPrefixSpace of [false, true]) {
      const plain = new HfTokenizer(gpt2StyleJson(addPrefixSpace), {}) as unknown as Encoder;
      const fast = new HfTokenizer(gpt2StyleJson(addPrefixSpace), {}) as unknown as Encoder;
      speedUpPreTokenizers(fast);
      for (const text of samples) expect(fast.pre_tokenizer(text)).toEqual(plain.pre_tokenizer(text));
    }
  });

  it("pre-tokenizer speed-ups - leaves tokenizers without one alone", () => {
    expect(() => speedUpPreTokenizers({ pre_tokenizer: null })).not.toThrow();
    expect(() => speedUpPreTokenizers(null)).not.toThrow();
  });
});
