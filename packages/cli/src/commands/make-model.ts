import { makeTinyModel } from "@tdist/engine-llamacpp";
import { BUILTIN_TOKENIZER_NAMES, type BuiltinTokenizerName } from "@tdist/llm";
import { Command, Option } from "commander";
import { numberArg } from "../flags/number-parser.js";
import type { CommandDefinition } from "./command-context.js";

interface MakeModelValues {
  out: string;
  vocab: BuiltinTokenizerName;
  layers?: number;
  width?: number;
  heads?: number;
  context?: number;
  seed?: number;
}

const positive = numberArg({ min: 1, integer: true });

/**
 * `tdist make-model --out file.gguf`: writes the project's tiny
 * llama-architecture GGUF with seeded random weights and a real tokenizer,
 * Qwen3's (with its chat template) by default or GPT-2's. Not a trained model.
 */
export const makeModelCommand: CommandDefinition = {
  name: "make-model",
  register(program, context) {
    const command = new Command("make-model")
      .summary("write the tiny random-weight GGUF test model")
      .requiredOption("--out <file>", "GGUF file to write")
      .addOption(
        new Option("--vocab <name>", "tokenizer and vocabulary").choices(BUILTIN_TOKENIZER_NAMES).default("qwen3"),
      )
      .addOption(new Option("--layers <n>", "transformer blocks (default 2)").argParser(positive))
      .addOption(new Option("--width <n>", "embedding width (default 64)").argParser(positive))
      .addOption(new Option("--heads <n>", "attention heads (default 4)").argParser(positive))
      .addOption(new Option("--context <n>", "context length in tokens (default 4096)").argParser(positive))
      .addOption(
        new Option("--seed <n>", "weight seed: the same seed writes the same file (default 1)").argParser(
          numberArg({ min: 0, integer: true }),
        ),
      )
      .action(async (values: MakeModelValues) => {
        const started = performance.now();
        await makeTinyModel({
          out: values.out,
          vocab: values.vocab,
          ...(values.layers !== undefined ? { layers: values.layers } : {}),
          ...(values.width !== undefined ? { width: values.width } : {}),
          ...(values.heads !== undefined ? { heads: values.heads } : {}),
          ...(values.context !== undefined ? { contextLength: values.context } : {}),
          ...(values.seed !== undefined ? { seed: values.seed } : {}),
        });
        context.io.out(
          `wrote ${values.out} (tdist-tiny-random: random weights, not a trained model) in ${Math.round(performance.now() - started)} ms`,
        );
        context.exitCode = 0;
      });
    program.addCommand(command);
  },
};
