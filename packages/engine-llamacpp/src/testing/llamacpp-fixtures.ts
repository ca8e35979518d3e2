import { tmpdir } from "node:os";
import { join } from "node:path";
import type { EngineOutput, PreprocessedRequest } from "@tdist/llm";
import { Context, withTimeout } from "@tdist/runtime";
import type { LlamaCppEngine, LlamaCppGenerateOptions } from "../llamacpp-engine.js";
import { ensureTinyModel } from "../tiny-model.js";

/** Bound of one generation in tests (the tiny model makes ~300 tokens/s per sequence here). */
export const GENERATE_BOUND_MS = 20_000;

/** Test cache shared by test files and runs, so the 57 MB model is generated once. */
export const TEST_CACHE_DIR = process.env.TDIST_CACHE_DIR || join(tmpdir(), "tdist-test-cache");

export function tinyModelPath(): Promise<string> {
  return withTimeout("generating the tiny model", 60_000, undefined, () =>
    ensureTinyModel({ cacheDir: TEST_CACHE_DIR }),
  );
}

export function request(
  tokenIds: number[],
  maxTokens: number,
  extra: Partial<Omit<PreprocessedRequest, "stop">> & { stop?: Partial<PreprocessedRequest["stop"]> } = {},
): PreprocessedRequest {
  return {
    model: "tiny",
    sampling: { temperature: 0 },
    eosTokenIds: [],
    output: {},
    ...extra,
    tokenIds,
    stop: { maxTokens, ...extra.stop },
  };
}

export function collect(
  engine: LlamaCppEngine,
  req: PreprocessedRequest,
  ctx: Context = new Context(),
  options: LlamaCppGenerateOptions = {},
): Promise<EngineOutput[]> {
  return withTimeout("generate", GENERATE_BOUND_MS, undefined, async () => {
    const outputs: EngineOutput[] = [];
    for await (const output of engine.generate(req, ctx, options)) outputs.push(output);
    return outputs;
  });
}

export const tokensOf = (outputs: EngineOutput[]): number[] => outputs.flatMap((output) => output.tokenIds);

export const finishOf = (outputs: EngineOutput[]): string | undefined => outputs.at(-1)?.finishReason;

/** Distinct chat-like prompts (token ids of the tiny model's Qwen3 vocabulary). */
export function prompts(count: number): number[][] {
  // <|im_start|>user\n ... <|im_end|>\n<|im_start|>assistant\n
  return Array.from({ length: count }, (_, i) => [151644, 872, 198, 9707, 1372 + i, 151645, 198, 151644, 77091, 198]);
}

/** Strings whose tokenization exercises the pre-tokenizer, unicode, and special/added tokens. */
export const TOKENIZER_SAMPLES = [
  "Hello, world!",
  "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
  "  multiple   spaces\n\n\tand tabs 12345 ünïcödé 你好世界 🙂",
  "don't I'll WE'RE it's",
  '<tool_call>{"a":1}</tool_call><|fim_prefix|>x<|endoftext|>',
];
