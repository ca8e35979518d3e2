import { TdistError } from "@tdist/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import { OffThreadTokenizer, TokenizeDeadlineError } from "./off-thread-tokenizer.js";
import { Preprocessor, type PreprocessorCard } from "./preprocessor.js";
import { RequestParamError } from "./request-param-error.js";
import { loadTokenizer } from "./tokenizer.js";
import { cardFieldsFromTokenizerConfig } from "./tokenizer-config.js";

const qwen3Files = builtinTokenizerFiles("qwen3");
const qwen3 = loadTokenizer(qwen3Files);
const gpt2Files = builtinTokenizerFiles("gpt2");
// add_bos_token exercises the bos rule applied after the thread's ids.
const gpt2WithBos = loadTokenizer({
  tokenizerJson: gpt2Files.tokenizerJson,
  tokenizerConfig: { ...gpt2Files.tokenizerConfig, add_bos_token: true, bos_token: "<|endoftext|>" },
});

const samples = [
  "Hello, world! It's 2026 and we're here.",
  "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
  "café naïve — “quotes” 東京都 日本語のテキスト 🙂👍🏽 mixed ascii後\n\n\tindent\r\n",
  "<|endoftext|>starts with a special token",
  "The quick brown fox jumps over the lazy dog. ".repeat(600),
];

const open: OffThreadTokenizer[] = [];
function offThreadFor(
  tokenizer: typeof qwen3,
  tokenizerJson: string,
  timeoutMs: number | undefined = 30_000,
): OffThreadTokenizer {
  const offThread = new OffThreadTokenizer({ tokenizer, tokenizerJson, timeoutMs });
  open.push(offThread);
  return offThread;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((offThread) => offThread.close()));
});

describe("off-thread tokenizer", () => {
  it("off-thread tokenizer - gives the ids in-line encoding gives, special tokens and bos included", async () => {
    for (const [tokenizer, json] of [
      [qwen3, qwen3Files.tokenizerJson],
      [gpt2WithBos, gpt2Files.tokenizerJson],
    ] as const) {
      const offThread = offThreadFor(tokenizer, json);
      for (const text of samples) {
        for (const addSpecialTokens of [true, false]) {
          const inLine = tokenizer.encode(text, { addSpecialTokens });
          expect(await offThread.encode(text, { addSpecialTokens })).toEqual(inLine);
        }
      }
    }
    expect(gpt2WithBos.encode("Hi")[0]).toBe(gpt2WithBos.bosTokenId);
  }, 60_000);

  it("off-thread tokenizer - the event loop keeps running while a pathological prompt is tokenized", async () => {
    const offThread = offThreadFor(qwen3, qwen3Files.tokenizerJson);
    const order: string[] = [];
    const large = offThread.encode("a".repeat(200_000)).then((ids) => {
      order.push("large");
      return ids;
    });
    // A timer set after the large prompt was handed over fires, and tokenizes in line, before it is done.
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        qwen3.encode("a small prompt");
        order.push("small");
        resolve();
      }, 1),
    );
    const ids = await large;
    expect(order).toEqual(["small", "large"]);
    expect(ids).toHaveLength(25_000);
  }, 60_000);

  it("off-thread tokenizer - a prompt past the deadline stops the thread and the next prompt gets a new one", async () => {
    const offThread = offThreadFor(qwen3, qwen3Files.tokenizerJson, 2_000);
    expect(await offThread.encode("warm up", { addSpecialTokens: false })).toEqual(qwen3.encode("warm up"));
    const first = offThread.threadId;
    const err = await rejection(offThread.encode("a".repeat(1_000_000)));
    expect(err).toBeInstanceOf(TokenizeDeadlineError);
    expect((err as TokenizeDeadlineError).code).toBe("timeout");
    expect((err as TokenizeDeadlineError).phase).toBe("tokenizing");
    expect(offThread.threadId).toBeUndefined();
    expect(await offThread.encode("after", { addSpecialTokens: false })).toEqual(qwen3.encode("after"));
    expect(offThread.threadId).not.toBe(first);
    expect(offThread.liveThreads).toBe(1);
  }, 60_000);

  it("off-thread tokenizer - an aborted signal stops waiting and stops the thread", async () => {
    const offThread = offThreadFor(qwen3, qwen3Files.tokenizerJson);
    await offThread.encode("warm up");
    const controller = new AbortController();
    const pending = offThread.encode("a".repeat(1_000_000), {}, { signal: controller.signal });
    controller.abort();
    const err = await rejection(pending);
    expect(TdistError.is(err, "cancelled")).toBe(true);
    expect(offThread.threadId).toBeUndefined();
    expect(TdistError.is(await rejection(offThread.encode("x", {}, { signal: controller.signal })), "cancelled")).toBe(
      true,
    );
  }, 60_000);

  it("off-thread tokenizer - close stops the thread and refuses what is pending", async () => {
    const offThread = offThreadFor(qwen3, qwen3Files.tokenizerJson);
    await offThread.encode("warm up");
    expect(offThread.liveThreads).toBe(1);
    const running = rejection(offThread.encode("a".repeat(1_000_000)));
    const queued = rejection(offThread.encode("queued behind it"));
    await offThread.close();
    expect(offThread.liveThreads).toBe(0);
    expect(TdistError.is(await running, "shutting_down")).toBe(true);
    expect(TdistError.is(await queued, "shutting_down")).toBe(true);
    expect(TdistError.is(await rejection(offThread.encode("later")), "shutting_down")).toBe(true);
  }, 60_000);

  it("off-thread tokenizer - starts no thread until a prompt needs one", async () => {
    const offThread = offThreadFor(qwen3, qwen3Files.tokenizerJson);
    expect(offThread.liveThreads).toBe(0);
    await offThread.close();
    expect(offThread.liveThreads).toBe(0);
  });
});

describe("preprocessor off the event loop", () => {
  const card: PreprocessorCard = {
    name: "qwen3",
    ...cardFieldsFromTokenizerConfig(qwen3Files.tokenizerConfig),
    eosTokenIds: qwen3Files.eosTokenIds,
    contextLength: 40_960,
  };

  it("preprocessor - prompts from the threshold up are tokenized in the thread, with the in-line ids", async () => {
    const offThread = offThreadFor(qwen3, qwen3Files.tokenizerJson);
    const preprocessor = new Preprocessor({ card, tokenizer: qwen3, offThread, offThreadMinBytes: 1024 });
    const inLine = new Preprocessor({ card, tokenizer: qwen3 });
    const small = "a short prompt";
    expect((await preprocessor.preprocessCompletionAsync({ prompt: small })).request.tokenIds).toEqual(
      inLine.preprocessCompletion({ prompt: small }).request.tokenIds,
    );
    expect(offThread.liveThreads).toBe(0);
    // 600 three-byte characters: under the threshold in UTF-16 units, over it in UTF-8 bytes.
    const large = `日本語${"東".repeat(600)}`;
    expect((await preprocessor.preprocessCompletionAsync({ prompt: large })).request.tokenIds).toEqual(
      inLine.preprocessCompletion({ prompt: large }).request.tokenIds,
    );
    expect(offThread.liveThreads).toBe(1);
    const messages = [
      { role: "system" as const, content: "You are terse. ".repeat(100) },
      { role: "user" as const, content: "Hi" },
    ];
    const chat = await preprocessor.preprocessChatAsync({ messages });
    expect(chat.request.tokenIds).toEqual(inLine.preprocessChat({ messages }).request.tokenIds);
    expect(chat.prompt).toBe(inLine.preprocessChat({ messages }).prompt);
  }, 60_000);

  it("preprocessor - a prompt past the tokenize deadline is a prompt_too_complex error on its param", async () => {
    const offThread = offThreadFor(qwen3, qwen3Files.tokenizerJson, 2_000);
    await offThread.encode("warm up");
    const preprocessor = new Preprocessor({ card, tokenizer: qwen3, offThread });
    const err = await rejection(
      preprocessor.preprocessChatAsync({ messages: [{ role: "user", content: "a".repeat(1_000_000) }] }),
    );
    expect(err).toBeInstanceOf(RequestParamError);
    expect((err as RequestParamError).code).toBe("bad_request");
    expect((err as RequestParamError).param).toBe("messages");
    expect((err as RequestParamError).openaiCode).toBe("prompt_too_complex");
  }, 60_000);
});
