import { TdistError } from "@tdist/runtime";
import { type Command, Option } from "commander";
import { ENGINES, type EngineKind, type WorkerSpec } from "../commands/engines.js";
import { numberArg } from "./number-parser.js";

export interface WorkerFlagValues {
  engine: EngineKind;
  model?: string;
  modelName?: string;
  threads?: number;
  sequences?: number;
  kvEvents: boolean;
  speedup?: number;
  delayMs?: number;
}

/** Flags that only one engine reads: given with another engine they are refused, never ignored. */
const ENGINE_ONLY: Partial<Record<keyof WorkerFlagValues, { flag: string; engines: readonly EngineKind[] }>> = {
  model: { flag: "--model", engines: ["llamacpp"] },
  threads: { flag: "--threads", engines: ["llamacpp"] },
  sequences: { flag: "--sequences", engines: ["llamacpp"] },
  kvEvents: { flag: "--no-kv-events", engines: ["llamacpp"] },
  speedup: { flag: "--speedup", engines: ["mocker"] },
  delayMs: { flag: "--delay-ms", engines: ["echo"] },
};

export function addWorkerOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--engine <engine>", "llamacpp (real CPU inference), mocker (simulated) or echo")
        .choices(ENGINES)
        .default("llamacpp"),
    )
    .addOption(
      new Option(
        "--model <file>",
        "llamacpp: a GGUF path, hf:<user>/<repo>/<file>.gguf or an https URL (default: the built-in tiny model)",
      ),
    )
    .addOption(new Option("--model-name <name>", "name the model is served under (default: from the engine)"))
    .addOption(
      new Option("--threads <n>", "llamacpp: CPU threads (default: cores - 1, at most 4)").argParser(
        numberArg({ min: 1, integer: true }),
      ),
    )
    .addOption(
      new Option("--sequences <n>", "llamacpp: concurrent sequences in one context").argParser(
        numberArg({ min: 1, integer: true }),
      ),
    )
    .addOption(new Option("--no-kv-events", "llamacpp: publish no KV events or load metrics (for non-kv routers)"))
    .addOption(
      new Option("--speedup <x>", "mocker: run the timing model this many times faster (default 1)").argParser(
        numberArg({ min: 0.001 }),
      ),
    )
    .addOption(
      new Option("--delay-ms <ms>", "echo: delay before each token (default 0)").argParser(numberArg({ min: 0 })),
    );
}

/** The worker flags, checked against the chosen engine. */
export function workerSpec(command: Command, values: WorkerFlagValues, namespace: string): WorkerSpec {
  for (const [key, rule] of Object.entries(ENGINE_ONLY)) {
    if (rule === undefined || command.getOptionValueSource(key) !== "cli") continue;
    if (!rule.engines.includes(values.engine)) {
      throw new TdistError(
        "invalid_option",
        `${rule.flag} applies to --engine ${rule.engines.join(" or ")} only, not --engine ${values.engine}`,
      );
    }
  }
  return {
    engine: values.engine,
    namespace,
    modelName: values.modelName,
    delayMs: values.delayMs,
    speedup: values.speedup,
    model: values.model,
    threads: values.threads,
    sequences: values.sequences,
    kvEvents: values.kvEvents,
  };
}
