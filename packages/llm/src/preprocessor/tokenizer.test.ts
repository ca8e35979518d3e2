import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { builtinTokenizerDirectory, builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import { loadTokenizer, loadTokenizerFromDirectory, sha256Hex, Tokenizer } from "./tokenizer.js";
import { cardFieldsFromTokenizerConfig, tokenizerConfigFromCard } from "./tokenizer-config.js";

const files = builtinTokenizerFiles("qwen3");
const qwen = loadTokenizer(files);

/** A tiny sentencepiece-style tokenizer (byte fallback, bos post-processor), like Llama 2's. */
function tinySentencepieceJson(): string {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  const pieces = ["▁", "h", "e", "l", "o", "▁h", "▁he", "▁hel", "▁hell", "▁hello"];
  for (const piece of pieces) vocab[piece] = Object.keys(vocab).length;
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return JSON.stringify({
    version: "1.0",
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
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
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
}

describe("tokenizer", () => {
  it("tokenizer - round-trips Qwen3 text with CJK and emoji", () => {
    const text = "Hello, world! 你好，世界 🌍🚀 naïve café";
    const ids = qwen.encode(text, { addSpecialTokens: false });
    expect(ids.length).toBeGreaterThan(5);
    expect(qwen.decode(ids)).toBe(text);
  });

  it("tokenizer - parses special token text as the special token", () => {
    const ids = qwen.encode("<|im_start|>user\nhi<|im_end|>\n", { addSpecialTokens: false });
    expect(ids[0]).toBe(151644);
    expect(ids).toContain(151645);
    expect(qwen.decode(ids, { skipSpecialTokens: true })).toBe("user\nhi\n");
  });

  it("tokenizer - exposes vocab size, special ids and eos from tokenizer_config", () => {
    expect(qwen.vocabSize).toBe(151669);
    expect(qwen.eosToken).toBe("<|im_end|>");
    expect(qwen.eosTokenId).toBe(151645);
    expect(qwen.bosToken).toBeUndefined();
    expect(qwen.bosTokenId).toBeUndefined();
    expect(qwen.addBosToken).toBe(false);
    expect(qwen.isSpecial(151643)).toBe(true);
    expect(qwen.isSpecial(151645)).toBe(true);
    expect(qwen.isSpecial(151667)).toBe(false); // <think> is an added token, not a special one
    expect(qwen.idToToken(151645)).toBe("<|im_end|>");
    expect(qwen.tokenToId("<|im_end|>")).toBe(151645);
    expect(qwen.decodeStrategy).toMatchObject({ kind: "bytes", byteLevel: true });
    expect(qwen.chatTemplate()).toContain("<|im_start|>");
  });

  it("tokenizer - maps byte-level tokens to their bytes", () => {
    const [id] = qwen.encode(" hello", { addSpecialTokens: false });
    expect(Buffer.from(qwen.tokenBytes(id as number) ?? []).toString()).toBe(" hello");
    expect(Buffer.from(qwen.tokenBytes(151645) ?? []).toString()).toBe("<|im_end|>");
    expect(qwen.tokenBytes(151669)).toBeUndefined();
    expect(qwen.tokenBytes(-1)).toBeUndefined();
  });

  it("tokenizer - caches one tokenizer per tokenizer.json and config", () => {
    const again = loadTokenizer({ tokenizerJson: files.tokenizerJson, tokenizerConfig: files.tokenizerConfig });
    expect(again).toBe(qwen);
    expect(qwen.sha256).toBe(files.sha256);
    expect(qwen.loadMs).toBeGreaterThan(0);
  });

  it("tokenizer - a config rebuilt from a model card shares the built vocabulary", () => {
    const fromCard = loadTokenizer({
      tokenizerJson: files.tokenizerJson,
      tokenizerConfig: tokenizerConfigFromCard(cardFieldsFromTokenizerConfig(files.tokenizerConfig)),
      sha256: files.sha256,
    });
    expect(fromCard).not.toBe(qwen);
    expect(fromCard.loadMs).toBe(qwen.loadMs); // the same build
    expect(fromCard.eosTokenId).toBe(151645);
    expect(fromCard.chatTemplate()).toBe(qwen.chatTemplate());
    expect(fromCard.specialTokenIds).toEqual(qwen.specialTokenIds);
  });

  it("tokenizer - rejects a tokenizer.json whose sha256 does not match", () => {
    let error: unknown;
    try {
      loadTokenizer({ tokenizerJson: files.tokenizerJson, sha256: "0".repeat(64) });
    } catch (err) {
      error = err;
    }
    expect(TdistError.is(error, "bad_request")).toBe(true);
  });

  it("tokenizer - rejects text that is not a tokenizer", () => {
    expect(() => Tokenizer.fromFiles({ tokenizerJson: "{nope" })).toThrow(TdistError);
    expect(() => Tokenizer.fromFiles({ tokenizerJson: "{}", tokenizerConfig: "[1]" })).toThrow(TdistError);
  });

  it("tokenizer - loads from a model directory through the cache", async () => {
    const fromDirectory = await loadTokenizerFromDirectory(builtinTokenizerDirectory("qwen3"));
    expect(fromDirectory).toBe(qwen);
    await expect(loadTokenizerFromDirectory("/nonexistent-tdist-dir")).rejects.toSatisfy((err: unknown) =>
      TdistError.is(err, "bad_request"),
    );
  });

  it("tokenizer - resolves bos/eos given as {content} objects and follows add_bos_token", () => {
    const json = tinySentencepieceJson();
    const tokenizer = Tokenizer.fromFiles({
      tokenizerJson: json,
      tokenizerConfig: { bos_token: { content: "<s>" }, eos_token: { content: "</s>" }, add_bos_token: true },
      sha256: sha256Hex(json),
    });
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenId).toBe(2);
    expect(tokenizer.decodeStrategy).toEqual({
      kind: "bytes",
      byteLevel: false,
      byteFallback: true,
      replacements: [["▁", " "]],
      stripLeadingSpaces: 1,
    });
    const withBos = tokenizer.encode("hello");
    expect(withBos[0]).toBe(1);
    expect(withBos.filter((id) => id === 1)).toHaveLength(1); // post-processor added it; not doubled
    expect(tokenizer.encode("hello", { addSpecialTokens: false })[0]).not.toBe(1);
    expect(tokenizer.decode(withBos, { skipSpecialTokens: true })).toBe("hello");
  });

  it("tokenizer - card fields and the config a frontend rebuilds from a card agree", () => {
    const fields = cardFieldsFromTokenizerConfig(files.tokenizerConfig);
    expect(fields).toMatchObject({ eosToken: "<|im_end|>", addBosToken: false });
    expect(fields.bosToken).toBeUndefined();
    const config = tokenizerConfigFromCard(fields);
    expect(config).toMatchObject({ eos_token: "<|im_end|>", bos_token: null, add_bos_token: false });
    expect(config.chat_template).toBe(files.tokenizerConfig.chat_template);
  });

  it("tokenizer - minTokenCount never exceeds the real count, and needs a normalizer that keeps every byte", () => {
    expect(qwen.maxTokenBytes).toBe(128);
    const hangulDecomposed = "\u1100\u1161\u11a8".repeat(50);
    const samples = [
      "x".repeat(5_000),
      " ".repeat(4_000),
      "=".repeat(3_000),
      "The quick brown fox jumps over the lazy dog. ".repeat(40),
      "你好，世界 🌍 ".repeat(100),
      hangulDecomposed,
      "<|im_start|>user\nhi<|im_end|>".repeat(30),
    ];
    for (const text of samples) {
      const bound = qwen.minTokenCount(text) as number;
      expect(bound).toBeGreaterThan(0);
      expect(bound).toBeLessThanOrEqual(qwen.encode(text, { addSpecialTokens: false }).length);
    }
    // NFC composes the jamo (9 bytes) into one syllable (3 bytes) before tokenizing: the bound counts that.
    expect(qwen.minTokenCount(hangulDecomposed)).toBe(Math.ceil((50 * 3) / 128));
    // A normalizer that replaces text (here spaces by ▁) gives no bound.
    expect(Tokenizer.fromFiles({ tokenizerJson: tinySentencepieceJson() }).minTokenCount("hello")).toBeUndefined();
  });
});
