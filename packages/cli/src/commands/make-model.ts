import { parseArgs } from "node:util";
import { makeTinyModel } from "@tdist/engine-llamacpp";
import { BUILTIN_TOKENIZER_NAMES, type BuiltinTokenizerName } from "@tdist/llm";
import type { CliIo } from "../cli-io.js";
import { numberFlag } from "./options.js";

/**
 * `tdist make-model --out file.gguf [--layers N --width N --heads N --context N --seed N --vocab qwen3|gpt2]`:
 * writes the project's tiny llama-architecture GGUF with seeded random
 * weights and a real tokenizer, Qwen3's (with its chat template) by default
 * or GPT-2's (not a trained model).
 */
export async function makeModelCommand(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: "string" },
      layers: { type: "string" },
      width: { type: "string" },
      heads: { type: "string" },
      context: { type: "string" },
      seed: { type: "string" },
      vocab: { type: "string" },
    },
  });
  if (!values.out) {
    io.err("tdist make-model: --out file.gguf is required");
    return 2;
  }
  const vocab = values.vocab ?? "qwen3";
  if (!(BUILTIN_TOKENIZER_NAMES as readonly string[]).includes(vocab)) {
    io.err(`tdist make-model: unknown --vocab ${vocab} (known: ${BUILTIN_TOKENIZER_NAMES.join(", ")})`);
    return 2;
  }
  const int = (name: string, value: string | undefined) => numberFlag(name, value, { min: 1, integer: true });
  const started = performance.now();
  await makeTinyModel({
    out: values.out,
    vocab: vocab as BuiltinTokenizerName,
    ...(values.layers ? { layers: int("layers", values.layers) as number } : {}),
    ...(values.width ? { width: int("width", values.width) as number } : {}),
    ...(values.heads ? { heads: int("heads", values.heads) as number } : {}),
    ...(values.context ? { contextLength: int("context", values.context) as number } : {}),
    ...(values.seed ? { seed: int("seed", values.seed) as number } : {}),
  });
  io.out(
    `wrote ${values.out} (tdist-tiny-random: random weights, not a trained model) in ${Math.round(performance.now() - started)} ms`,
  );
  return 0;
}
