import { withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import { loadTokenizer } from "../preprocessor/tokenizer.js";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import {
  assembleResponse,
  ResponseAssembler,
  type ResponseAssemblerOptions,
  type ResponseChunk,
} from "./response-assembler.js";

const tokenizer = loadTokenizer(builtinTokenizerFiles("qwen3"));
const EOS = 151645;
const ENDOFTEXT = 151643;

function ids(text: string): number[] {
  return tokenizer.encode(text, { addSpecialTokens: false });
}

function assembler(options: Partial<ResponseAssemblerOptions> = {}): ResponseAssembler {
  return new ResponseAssembler({ tokenizer, maxTokens: 1000, eosTokenIds: [EOS, ENDOFTEXT], ...options });
}

/** Feeds one engine output per token; returns the chunks up to the finish. */
function feedTokens(target: ResponseAssembler, tokenIds: number[], last?: Partial<EngineOutput>): ResponseChunk[] {
  const chunks: ResponseChunk[] = [];
  for (const [index, id] of tokenIds.entries()) {
    const output: EngineOutput = index === tokenIds.length - 1 ? { tokenIds: [id], ...last } : { tokenIds: [id] };
    const chunk = target.push(output);
    if (chunk === undefined) break;
    chunks.push(chunk);
  }
  return chunks;
}

const textOf = (chunks: ResponseChunk[]): string => chunks.map((chunk) => chunk.text).join("");

async function collect(stream: AsyncIterable<ResponseChunk>): Promise<ResponseChunk[]> {
  return withTimeout("collect response", 5_000, undefined, async () => {
    const chunks: ResponseChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
  });
}

describe("response assembler", () => {
  it("response assembler - eos ends with stop, counts the eos token and does not emit its text", () => {
    const target = assembler();
    const tokens = [...ids("Hello world"), EOS, ...ids(" ignored")];
    const chunk = target.push({ tokenIds: tokens });
    expect(chunk).toMatchObject({ text: "Hello world", finishReason: "stop", stopReason: EOS });
    expect(chunk?.tokenIds).toEqual(tokens.slice(0, ids("Hello world").length + 1));
    expect(target.completionTokens).toBe(ids("Hello world").length + 1);
    expect(target.finished).toBe(true);
    expect(target.push({ tokenIds: [1] })).toBeUndefined();
  });

  it("response assembler - a stop string across tokens ends with stop, counting up to the completing token", () => {
    const target = assembler({ stopStrings: ["\nUser:"] });
    const tokens = ids("The answer is 42.\nUser: more");
    // ".\n" "User" ":" -> the stop completes on ":" (index 8); "." before it is emitted.
    const chunks = feedTokens(target, tokens);
    expect(textOf(chunks)).toBe("The answer is 42.");
    expect(chunks.at(-1)).toMatchObject({ finishReason: "stop", stopReason: "\nUser:" });
    expect(target.completionTokens).toBe(tokens.indexOf(25) + 1);
    expect(chunks.some((chunk) => chunk.text.includes("User"))).toBe(false);
  });

  it("response assembler - a stop string inside one batched output cuts the right token", () => {
    const target = assembler({ stopStrings: ["42"] });
    const tokens = ids("The answer is 42.\nUser: more");
    const chunk = target.push({ tokenIds: tokens });
    expect(chunk).toMatchObject({ text: "The answer is ", finishReason: "stop", stopReason: "42" });
    expect(target.completionTokens).toBe(6); // "The" " answer" " is" " " "4" "2"
    expect(chunk?.tokenIds).toEqual(tokens.slice(0, 6));
  });

  it("response assembler - max tokens ends with length and emits that token's text", () => {
    const target = assembler({ maxTokens: 3, stopStrings: ["zzz"] });
    const tokens = ids("The answer is 42.");
    const chunks = feedTokens(target, tokens);
    expect(chunks).toHaveLength(3);
    expect(textOf(chunks)).toBe("The answer is");
    expect(chunks[2]?.finishReason).toBe("length");
    expect(target.completionTokens).toBe(3);
  });

  it("response assembler - min tokens keeps going past eos, stop ids and stop strings", () => {
    const target = assembler({ minTokens: 4, stopStrings: ["a"], stopTokenIds: [ids("b")[0] as number] });
    const chunk = target.push({ tokenIds: [EOS, ...ids("a"), ...ids("b"), ...ids("c"), EOS, ...ids("d")] });
    expect(chunk).toMatchObject({ text: "abc", finishReason: "stop", stopReason: EOS });
    expect(target.completionTokens).toBe(5);
  });

  it("response assembler - ignore_eos keeps going, stop token ids still stop", () => {
    const stopId = ids("!")[0] as number;
    const target = assembler({ ignoreEos: true, stopTokenIds: [stopId] });
    const chunk = target.push({ tokenIds: [...ids("hi"), EOS, ...ids(" there!"), ...ids(" more")] });
    expect(chunk).toMatchObject({ text: "hi there", finishReason: "stop", stopReason: stopId });
  });

  it("response assembler - never emits a broken character across outputs", () => {
    const target = assembler();
    const tokens = ids("地球 🌍 and 👨‍👩‍👧");
    const chunks = feedTokens(target, tokens, { finishReason: "length" });
    expect(chunks.some((chunk) => chunk.text.includes("\uFFFD"))).toBe(false);
    expect(textOf(chunks)).toBe("地球 🌍 and 👨‍👩‍👧");
    expect(chunks.at(-1)?.finishReason).toBe("length");
  });

  it("response assembler - passes the engine's finish reason, error and cached tokens through", () => {
    const errored = assembler();
    const chunk = errored.push({
      tokenIds: ids("partial"),
      finishReason: "error",
      error: "engine died",
      cachedTokens: 16,
    });
    expect(chunk).toMatchObject({ text: "partial", finishReason: "error", error: "engine died", cachedTokens: 16 });
    expect(errored.cachedTokens).toBe(16);
    const cancelled = assembler();
    expect(cancelled.push({ tokenIds: [], finishReason: "cancelled" })).toMatchObject({ finishReason: "cancelled" });
  });

  it("response assembler - finish flushes text held back for a possible stop string", () => {
    const target = assembler({ stopStrings: ["Hello there"] });
    expect(target.push({ tokenIds: ids("Say Hello") })).toMatchObject({ text: "Say " });
    expect(target.finish("cancelled")).toMatchObject({ text: "Hello", finishReason: "cancelled" });
    expect(target.finish("error")).toBeUndefined();
  });

  it("response assembler - keeps logprobs of the consumed tokens only", () => {
    const target = assembler();
    const tokens = [...ids("Hi"), EOS, ...ids("x")];
    const logprobs = tokens.map((tokenId, index) => ({ tokenId, logprob: -index }));
    const chunk = target.push({ tokenIds: tokens, logprobs });
    expect(chunk?.logprobs).toEqual(logprobs.slice(0, tokens.indexOf(EOS) + 1));
  });

  it("response assembler - forRequest takes the limits of a preprocessed request", () => {
    const request: PreprocessedRequest = {
      model: "m",
      tokenIds: [1],
      sampling: {},
      stop: { maxTokens: 2, stopTokenIds: [] },
      eosTokenIds: [EOS],
      output: {},
    };
    const target = ResponseAssembler.forRequest(tokenizer, request, []);
    expect(target.push({ tokenIds: ids("one two three") })).toMatchObject({ text: "one two", finishReason: "length" });
  });

  it("response assembler - assembleResponse stops the engine stream once the response ends", async () => {
    let released = false;
    let produced = 0;
    async function* engine(): AsyncGenerator<EngineOutput> {
      try {
        for (const id of ids("count: 1 2 3 4 5 6 7 8 9")) {
          produced++;
          yield { tokenIds: [id] };
        }
        yield { tokenIds: [], finishReason: "stop" };
      } finally {
        released = true;
      }
    }
    const chunks = await collect(assembleResponse(engine(), assembler({ stopStrings: [" 3"] })));
    expect(textOf(chunks)).toBe("count: 1 2");
    expect(chunks.at(-1)?.finishReason).toBe("stop");
    expect(released).toBe(true);
    expect(produced).toBeLessThan(ids("count: 1 2 3 4 5 6 7 8 9").length);
  });

  it("response assembler - a stream that ends without a finish reason ends with error", async () => {
    async function* engine(): AsyncGenerator<EngineOutput> {
      yield { tokenIds: ids("half") };
    }
    const chunks = await collect(assembleResponse(engine(), assembler()));
    expect(textOf(chunks)).toBe("half");
    expect(chunks.at(-1)).toMatchObject({ finishReason: "error" });
  });
});
