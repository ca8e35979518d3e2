import { WORKER_ROLES, type WorkerRole } from "@tdist/llm";
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
  mode?: WorkerRole;
  kvTransferGbps?: number;
  kvBytesPerToken?: number;
  migrationLimit?: number;
}

/** Flags that only one engine reads: given with another engine they are refused, never ignored. */
const ENGINE_ONLY: Partial<Record<keyof WorkerFlagValues, { flag: string; engines: readonly EngineKind[] }>> = {
  model: { flag: "--model", engines: ["llamacpp"] },
  threads: { flag: "--threads", engines: ["llamacpp"] },
  sequences: { flag: "--sequences", engines: ["llamacpp"] },
  kvEvents: { flag: "--no-kv-events", engines: ["llamacpp"] },
  speedup: { flag: "--speedup", engines: ["mocker"] },
  kvTransferGbps: { flag: "--kv-transfer-gbps", engines: ["mocker"] },
  kvBytesPerToken: { flag: "--kv-bytes-per-token", engines: ["mocker"] },
  delayMs: { flag: "--delay-ms", engines: ["echo"] },
};

/** The worker flags; `withMode` false for `tdist run`, which takes the topology as worker counts instead. */
export function addWorkerOptions(command: Command, withMode = true): Command {
  if (withMode) {
    command.addOption(
      new Option(
        "--mode <role>",
        "disaggregated serving: prefill (computes prompts' KV caches for decode workers), decode, or aggregated (both)",
      )
        .choices(WORKER_ROLES)
        .default("aggregated"),
    );
    // `tdist run` takes the frontend's --migration-limit instead (one process, one setting).
    command.addOption(
      new Option(
        "--migration-limit <n>",
        "times a frontend moves a request to another worker when this one fails mid-stream, in the model card (0: never; default 3)",
      ).argParser(numberArg({ min: 0, max: 1000, integer: true })),
    );
  }
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
      new Option(
        "--kv-transfer-gbps <gbps>",
        "mocker: prefill-to-decode KV bandwidth in GB/s for the simulated transfer time (default 64; 0: none)",
      ).argParser(numberArg({ min: 0 })),
    )
    .addOption(
      new Option(
        "--kv-bytes-per-token <bytes>",
        "mocker: KV cache bytes per token for the simulated transfer time (default 131072, an 8B-like model)",
      ).argParser(numberArg({ min: 1, integer: true })),
    )
    .addOption(
      new Option("--delay-ms <ms>", "echo: delay before each token (default 0)").argParser(numberArg({ min: 0 })),
    );
}

/** Refuses a disaggregated role for an engine without a KV cache to hand over. */
export function checkRole(engine: EngineKind, role: WorkerRole, flag: string): void {
  if (role !== "aggregated" && engine === "echo") {
    throw new TdistError(
      "invalid_option",
      `${flag} needs an engine with a KV cache (llamacpp or mocker); the echo engine serves aggregated only`,
    );
  }
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
  const role = values.mode ?? "aggregated";
  checkRole(values.engine, role, `--mode ${role}`);
  return {
    engine: values.engine,
    namespace,
    role,
    kvTransferGbps: values.kvTransferGbps,
    kvBytesPerToken: values.kvBytesPerToken,
    modelName: values.modelName,
    delayMs: values.delayMs,
    speedup: values.speedup,
    model: values.model,
    threads: values.threads,
    sequences: values.sequences,
    kvEvents: values.kvEvents,
    migrationLimit: values.migrationLimit,
  };
}
