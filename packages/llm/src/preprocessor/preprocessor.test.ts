import { TdistError } from "@tdist/runtime";
import { describe, expect, it, vi } from "vitest";
import { builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import { Preprocessor, type PreprocessorCard } from "./preprocessor.js";
import { RequestParamError } from "./request-param-error.js";
import { loadTokenizer } from "./tokenizer.js";
import { cardFieldsFromTokenizerConfig } from "./tokenizer-config.js";

const files = builtinTokenizerFiles("qwen3");
const tokenizer = loadTokenizer(files);
const card: PreprocessorCard = {
  name: "qwen3",
  ...cardFieldsFromTokenizerConfig(files.tokenizerConfig),
  eosTokenIds: files.eosTokenIds,
  contextLength: 64,
};
const preprocessor = new Preprocessor({ card, tokenizer });

function paramError(fn: () => unknown): RequestParamError {
  try {
    fn();
  } catch (err) {
    if (err instanceof RequestParamError) return err;
    throw err;
  }
  throw new Error("expected a RequestParamError");
}

describe("preprocessor", () => {
  it("preprocessor - renders and tokenizes a chat with special tokens as specials", () => {
    const result = preprocessor.preprocessChat({ messages: [{ role: "user", content: "Hi" }] });
    expect(result.prompt).toBe("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    const ids = result.request.tokenIds;
    expect(ids[0]).toBe(151644);
    expect(ids.filter((id) => id === 151644)).toHaveLength(2);
    expect(ids.filter((id) => id === 151645)).toHaveLength(1);
    expect(tokenizer.decode(ids)).toBe(result.prompt);
    expect(result.promptTokens).toBe(ids.length);
  });

  it("preprocessor - defaults max tokens to the rest of the context and carries eos and stop ids", () => {
    const result = preprocessor.preprocessChat(
      { messages: [{ role: "user", content: "Hi" }] },
      { stop: ["\n\n", "", "\n\n"], stopTokenIds: [151643], sampling: { temperature: 0.5 }, logprobs: 2 },
    );
    expect(result.request).toMatchObject({
      model: "qwen3",
      sampling: { temperature: 0.5 },
      stop: { maxTokens: 64 - result.promptTokens, stopTokenIds: [151643] },
      eosTokenIds: [151645, 151643],
      output: { logprobs: 2 },
    });
    expect(result.stopStrings).toEqual(["\n\n"]);
  });

  it("preprocessor - takes eos from the tokenizer when the card has none", () => {
    const bare = new Preprocessor({ card: { ...card, eosTokenIds: [] }, tokenizer });
    expect(bare.preprocessCompletion({ prompt: "Hi" }).request.eosTokenIds).toEqual([151645]);
  });

  it("preprocessor - encodes completion prompts from text or token ids", () => {
    const text = preprocessor.preprocessCompletion({ prompt: "The capital of France is" }, { maxTokens: 5 });
    expect(tokenizer.decode(text.request.tokenIds)).toBe("The capital of France is");
    expect(text.request.stop.maxTokens).toBe(5);
    expect(text.prompt).toBeUndefined();
    const ids = preprocessor.preprocessCompletion({ prompt: [785, 6722] });
    expect(ids.request.tokenIds).toEqual([785, 6722]);
    expect(paramError(() => preprocessor.preprocessCompletion({ prompt: [1, 999_999] })).param).toBe("prompt");
    expect(paramError(() => preprocessor.preprocessCompletion({ prompt: "" })).param).toBe("prompt");
  });

  it("preprocessor - rejects a prompt that fills the context", () => {
    const long = "word ".repeat(100);
    const error = paramError(() => preprocessor.preprocessChat({ messages: [{ role: "user", content: long }] }));
    expect(error.code).toBe("bad_request");
    expect(error.param).toBe("messages");
    expect(error.openaiCode).toBe("context_length_exceeded");
    expect(paramError(() => preprocessor.preprocessCompletion({ prompt: long })).param).toBe("prompt");
  });

  it("preprocessor - rejects max_tokens beyond what the context has left", () => {
    const input = { messages: [{ role: "user", content: "Hi" }] };
    const promptTokens = preprocessor.preprocessChat(input).promptTokens;
    expect(preprocessor.preprocessChat(input, { maxTokens: 64 - promptTokens }).request.stop.maxTokens).toBe(
      64 - promptTokens,
    );
    const error = paramError(() => preprocessor.preprocessChat(input, { maxTokens: 65 - promptTokens }));
    expect(error.param).toBe("max_tokens");
    expect(error.openaiCode).toBe("context_length_exceeded");
    expect(TdistError.is(error, "bad_request")).toBe(true);
    expect(paramError(() => preprocessor.preprocessChat(input, { maxTokens: 0 })).param).toBe("max_tokens");
  });

  it("preprocessor - validates min_tokens, stop ids, stop strings and logprobs", () => {
    const input = { messages: [{ role: "user", content: "Hi" }] };
    expect(preprocessor.preprocessChat(input, { maxTokens: 4, minTokens: 2 }).request.stop.minTokens).toBe(2);
    expect(paramError(() => preprocessor.preprocessChat(input, { maxTokens: 4, minTokens: 5 })).param).toBe(
      "min_tokens",
    );
    expect(paramError(() => preprocessor.preprocessChat(input, { stopTokenIds: [-1] })).param).toBe("stop_token_ids");
    expect(paramError(() => preprocessor.preprocessChat(input, { stop: [3 as unknown as string] })).param).toBe("stop");
    expect(paramError(() => preprocessor.preprocessChat(input, { logprobs: -1 })).param).toBe("logprobs");
    expect(paramError(() => preprocessor.preprocessChat({ messages: [] })).param).toBe("messages");
  });

  it("preprocessor - prepends bos once when the model asks for it", () => {
    // Qwen3 has no bos; pretend <|endoftext|> is one to exercise the rule.
    const cardWithBos = { ...card, bosToken: "<|endoftext|>", addBosToken: true, contextLength: 4096 };
    const tokenizerWithBos = loadTokenizer({
      tokenizerJson: files.tokenizerJson,
      tokenizerConfig: { ...files.tokenizerConfig, bos_token: "<|endoftext|>", add_bos_token: true },
    });
    const preprocessorWithBos = new Preprocessor({ card: cardWithBos, tokenizer: tokenizerWithBos });
    const chat = preprocessorWithBos.preprocessChat({ messages: [{ role: "user", content: "Hi" }] });
    expect(chat.request.tokenIds[0]).toBe(151643);
    expect(chat.request.tokenIds[1]).toBe(151644);
    const templated = new Preprocessor({
      card: { ...cardWithBos, chatTemplate: "{{ bos_token }}{{ messages[0].content }}" },
      tokenizer: tokenizerWithBos,
    }).preprocessChat({ messages: [{ role: "user", content: "Hi" }] });
    expect(templated.request.tokenIds.filter((id) => id === 151643)).toHaveLength(1);
    const completion = preprocessorWithBos.preprocessCompletion({ prompt: "Hi" });
    expect(completion.request.tokenIds[0]).toBe(151643);
  });

  it("preprocessor - falls back to ChatML without a chat template", () => {
    const noTemplate = new Preprocessor({
      card: { name: "plain", eosTokenIds: [], contextLength: 100 },
      tokenizer: loadTokenizer({ tokenizerJson: files.tokenizerJson }),
    });
    expect(noTemplate.renderChat({ messages: [{ role: "user", content: "x" }] })).toBe(
      "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("preprocessor - without max_tokens, defaultMaxTokens applies, capped at what the context has left", () => {
    const input = { prompt: "The capital of France is" };
    const promptTokens = preprocessor.preprocessCompletion(input).promptTokens;
    expect(preprocessor.preprocessCompletion(input).request.stop.maxTokens).toBe(64 - promptTokens);
    expect(preprocessor.preprocessCompletion(input, { defaultMaxTokens: 16 }).request.stop.maxTokens).toBe(16);
    const long = { prompt: Array.from({ length: 60 }, () => 9) };
    expect(preprocessor.preprocessCompletion(long, { defaultMaxTokens: 16 }).request.stop.maxTokens).toBe(4);
    expect(
      preprocessor.preprocessCompletion(input, { maxTokens: 30, defaultMaxTokens: 16 }).request.stop.maxTokens,
    ).toBe(30);
  });

  it("preprocessor - logit_bias passes to the engine when its ids are the model's and its biases in [-100, 100]", () => {
    const input = { prompt: "x" };
    const bias = { "0": -100, "151668": 100, "42": 0.5 };
    expect(
      preprocessor.preprocessCompletion(input, { sampling: { logitBias: bias } }).request.sampling.logitBias,
    ).toEqual(bias);
    expect(
      preprocessor.preprocessCompletion(input, { sampling: { logitBias: {} } }).request.sampling,
    ).not.toHaveProperty("logitBias");
    const refused: Record<string, number>[] = [
      { "151669": 1 },
      { "-1": 1 },
      { "1.5": 1 },
      { "007": 1 },
      { abc: 1 },
      { "5": 101 },
      { "5": Number.NaN },
      Object.fromEntries(Array.from({ length: 301 }, (_, i) => [String(i), 1])),
    ];
    for (const logitBias of refused) {
      const error = paramError(() => preprocessor.preprocessCompletion(input, { sampling: { logitBias } }));
      expect(error.param).toBe("logit_bias");
      expect(error.code).toBe("bad_request");
    }
  });

  it("preprocessor - a prompt whose size proves it cannot fit is refused without tokenizing it", () => {
    const encode = vi.spyOn(tokenizer, "encode");
    try {
      // No Qwen3 token is longer than 128 bytes: 64 * 128 + 1 bytes are at least 65 tokens.
      for (const call of [
        () => preprocessor.preprocessCompletion({ prompt: "x".repeat(64 * 128 + 1) }),
        () => preprocessor.preprocessChat({ messages: [{ role: "user", content: "x".repeat(64 * 128) }] }),
      ]) {
        encode.mockClear();
        const error = paramError(call);
        expect(error.openaiCode).toBe("context_length_exceeded");
        expect(encode).not.toHaveBeenCalled();
      }
      // Below the bound the tokens are counted, and the count decides.
      encode.mockClear();
      const error = paramError(() => preprocessor.preprocessCompletion({ prompt: "x".repeat(63 * 128) }));
      expect(error.openaiCode).toBe("context_length_exceeded");
      expect(encode).toHaveBeenCalledTimes(1);
    } finally {
      encode.mockRestore();
    }
  });
});
