import { describe, expect, it } from "vitest";
import { builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import { loadTokenizer, Tokenizer } from "../preprocessor/tokenizer.js";
import { IncrementalDetokenizer, type IncrementalDetokenizerOptions } from "./incremental-detokenizer.js";

const qwen = loadTokenizer(builtinTokenizerFiles("qwen3"));

const MIXED_TEXT =
  "Hello, world! 你好，世界。这是一个测试 🌍🚀 👨‍👩‍👧 日本語のテキスト 😀 naïve café, " +
  "한국어 문장, Ελληνικά, emoji at end 🎉";

function pushEach(tokenizer: Tokenizer, ids: readonly number[], options?: IncrementalDetokenizerOptions): string[] {
  const detokenizer = new IncrementalDetokenizer(tokenizer, options);
  const deltas = ids.map((id) => detokenizer.push(id));
  deltas.push(detokenizer.flush());
  return deltas;
}

/** A tiny sentencepiece-style tokenizer (Llama 2's decoder: ▁ for space, `<0xNN>` byte fallback, leading space stripped). */
function tinySentencepiece(): Tokenizer {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  for (const piece of ["▁", "h", "e", "l", "o", "▁h", "▁he", "▁hel", "▁hell", "▁hello"]) {
    vocab[piece] = Object.keys(vocab).length;
  }
  const special = (id: number, content: string) => ({ id, content, normalized: false, special: true });
  const tokenizerJson = JSON.stringify({
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    model: {
      type: "BPE",
      unk_token: "<unk>",
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges: ["▁ h", "▁h e", "▁he l", "▁hel l", "▁hell o"],
    },
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
  });
  return Tokenizer.fromFiles({ tokenizerJson, tokenizerConfig: { bos_token: "<s>", eos_token: "</s>" } });
}

describe("incremental detokenizer", () => {
  it("incremental detokenizer - equals a full decode of CJK and emoji text, never emitting a broken character", () => {
    const ids = qwen.encode(MIXED_TEXT, { addSpecialTokens: false });
    for (const mode of ["auto", "window"] as const) {
      const deltas = pushEach(qwen, ids, { mode });
      expect(deltas.join("")).toBe(MIXED_TEXT);
      expect(deltas.join("")).toBe(qwen.decode(ids));
      expect(deltas.some((delta) => delta.includes("\uFFFD"))).toBe(false);
      expect(deltas.filter((delta) => delta === "").length).toBeGreaterThan(3); // characters did split
    }
  });

  it("incremental detokenizer - emits a character split over three tokens when its last byte arrives", () => {
    // " 🌍" is " \xF0\x9F" + "\x8C" + "\x8D" in Qwen3's byte-level vocabulary.
    expect(qwen.encode(" 🌍", { addSpecialTokens: false })).toEqual([11162, 234, 235]);
    expect(pushEach(qwen, [11162, 234, 235])).toEqual([" ", "", "🌍", ""]);
    expect(pushEach(qwen, [11162, 234, 235], { mode: "window" })).toEqual(["", "", " 🌍", ""]);
  });

  it("incremental detokenizer - an unfinished character becomes U+FFFD at flush, as a full decode shows it", () => {
    const deltas = pushEach(qwen, [11162, 234]);
    expect(deltas).toEqual([" ", "", "\uFFFD"]);
    expect(deltas.join("")).toBe(qwen.decode([11162, 234]));
    expect(pushEach(qwen, [11162, 234], { mode: "window" }).join("")).toBe(qwen.decode([11162, 234]));
  });

  it("incremental detokenizer - a byte that can never complete becomes U+FFFD as soon as that is certain", () => {
    // 234 alone is the continuation byte 0x8C.
    const deltas = pushEach(qwen, [234, 64]);
    expect(deltas).toEqual(["\uFFFD", "a", ""]);
    expect(deltas.join("")).toBe(qwen.decode([234, 64]));
  });

  it("incremental detokenizer - skips special tokens unless told not to", () => {
    const ids = qwen.encode("<|im_start|>assistant\nhi<think>x</think><|im_end|>", { addSpecialTokens: false });
    expect(pushEach(qwen, ids).join("")).toBe("assistant\nhi<think>x</think>");
    expect(pushEach(qwen, ids, { skipSpecialTokens: false }).join("")).toBe(
      "<|im_start|>assistant\nhi<think>x</think><|im_end|>",
    );
    expect(pushEach(qwen, ids, { mode: "window" }).join("")).toBe("assistant\nhi<think>x</think>");
  });

  it("incremental detokenizer - ids outside the vocabulary produce no text", () => {
    const detokenizer = new IncrementalDetokenizer(qwen);
    expect(detokenizer.push(151_900)).toBe("");
    expect(detokenizer.push(64)).toBe("a");
    expect(detokenizer.tokenCount).toBe(2);
  });

  it("incremental detokenizer - decodes sentencepiece byte-fallback tokens", () => {
    const tokenizer = tinySentencepiece();
    expect(tokenizer.decodeStrategy.kind).toBe("bytes");
    const text = "hello 你好 hello";
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    expect(ids.map((id) => tokenizer.idToToken(id))).toEqual([
      "▁hello",
      "▁",
      "<0xE4>",
      "<0xBD>",
      "<0xA0>",
      "<0xE5>",
      "<0xA5>",
      "<0xBD>",
      "▁hello",
    ]);
    const deltas = pushEach(tokenizer, ids);
    expect(deltas).toEqual(["hello", " ", "", "", "你", "", "", "好", " hello", ""]);
    expect(deltas.join("")).toBe(tokenizer.decode(ids));
    expect(pushEach(tokenizer, ids, { mode: "window" }).join("")).toBe(tokenizer.decode(ids));
  });

  it("incremental detokenizer - per-token work stays bounded over 20k tokens", () => {
    const block = qwen.encode(MIXED_TEXT, { addSpecialTokens: false });
    const ids: number[] = [];
    while (ids.length < 20_000) ids.push(...block);
    for (const mode of ["auto", "window"] as const) {
      const detokenizer = new IncrementalDetokenizer(qwen, { mode });
      let maxWindow = 0;
      let text = "";
      for (const id of ids) {
        text += detokenizer.push(id);
        maxWindow = Math.max(maxWindow, detokenizer.window);
      }
      text += detokenizer.flush();
      expect(text).toBe(MIXED_TEXT.repeat(ids.length / block.length));
      // Re-decoded tokens per step are bounded by the longest split character, not the sequence length.
      expect(maxWindow).toBeLessThanOrEqual(mode === "auto" ? 3 : 8);
    }
  });

  it("incremental detokenizer - refuses tokens after flush", () => {
    const detokenizer = new IncrementalDetokenizer(qwen);
    expect(detokenizer.flush()).toBe("");
    expect(() => detokenizer.push(64)).toThrow();
  });
});
