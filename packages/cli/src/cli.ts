import { parseArgs } from "node:util";
import { DistributedRuntime, Env, readEnv, TdistError } from "@tdist/runtime";
import type { CliIo } from "./cli-io.js";
import { flagsToEnv, runtimeFlags } from "./cli-options.js";
import { formatEnv } from "./commands/env.js";
import { makeModelCommand } from "./commands/make-model.js";
import { frontendCommand, type RunningCommand, runCommand, workerCommand } from "./commands/serve.js";
import { formatStatus, readStatus } from "./commands/status.js";
import { createLogger } from "./logging.js";

const USAGE = `usage: tdist <command> [options]

commands:
  run                 frontend + workers in one process, embedded discovery (npm start runs this)
                        --engine llamacpp|mocker|echo (default llamacpp)  --workers N  --model-name NAME
                        --model FILE.gguf|hf:user/repo/file.gguf (llamacpp; default: the built-in tiny model)
                        --threads N --sequences N --no-kv-events (llamacpp)  --speedup X (mocker)  --delay-ms MS (echo)
                        --port 8000  --host 0.0.0.0  --router-mode MODE
  frontend            the OpenAI HTTP frontend; finds workers through discovery
                        --port --host --router-mode round-robin|random|least-loaded|power-of-two|kv|kv-approx|sglang|llm-d
                        --kv-overlap-weight W (default 16)  --router-temperature T  --router-replica-sync
                        --active-decode-blocks-threshold F (0-1)  --active-prefill-tokens-threshold N
                          (kv routers: skip busy workers; when all are busy, shed the request with a 503)
  worker              one model worker: --engine llamacpp|mocker|echo --model ... --model-name NAME
                        (and the engine flags of run; --no-kv-events: a llama.cpp worker publishes no KV events)
  make-model          --out FILE.gguf [--layers --width --heads --context --seed --vocab qwen3|gpt2]: the tiny random model
  status [--json]     namespaces, components, endpoints, instances and models from discovery
  env                 every TDIST_* environment variable with its default

runtime options (each overrides its TDIST_* variable):
  --discovery memory|etcd      --etcd-endpoints URL[,URL]
  --nats-url URL               --request-plane tcp|nats
  --event-plane memory|nats    --namespace NAME
  --log-level LEVEL`;

export type { CliIo } from "./cli-io.js";

const stdio: CliIo = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};

/** Runs one CLI invocation; returns the exit code. */
export async function runCli(argv: string[], io: CliIo = stdio): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "status":
        return await statusCommand(rest, io);
      case "run":
        return await serveUntilSignal(await runCommand(rest, io));
      case "frontend":
        return await serveUntilSignal(await frontendCommand(rest, io));
      case "worker":
        return await serveUntilSignal(await workerCommand(rest, io));
      case "env":
        io.out(formatEnv());
        return 0;
      case "make-model":
        return await makeModelCommand(rest, io);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        io.out(USAGE);
        return command === undefined ? 1 : 0;
      default:
        io.err(`tdist: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof TdistError) {
      io.err(`tdist: ${err.code}: ${err.message}`);
      return 2;
    }
    io.err(`tdist: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

/** Keeps a long-running command up until SIGINT/SIGTERM, then stops it gracefully (second signal: exit now). */
function serveUntilSignal(command: RunningCommand): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (): void => {
      if (stopping) process.exit(1);
      stopping = true;
      command.stop().then(
        () => {
          process.off("SIGINT", onSignal);
          process.off("SIGTERM", onSignal);
          resolve(0);
        },
        () => resolve(1),
      );
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}

async function statusCommand(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...runtimeFlags, json: { type: "boolean" } } });
  const env = flagsToEnv(values);
  if (readEnv(Env.discovery, env) === "memory") {
    io.err("tdist status: memory discovery is private to one process; use --discovery etcd");
  }
  const logger = createLogger(readEnv(Env.logLevel, env) === "info" ? "warn" : readEnv(Env.logLevel, env));
  const runtime = await DistributedRuntime.create({ env, logger, connectTimeoutMs: 5_000 });
  try {
    const status = await readStatus(runtime.discovery);
    io.out(values.json ? JSON.stringify(status, null, 2) : formatStatus(status));
    return 0;
  } finally {
    await runtime.shutdown({ graceMs: 0 });
  }
}
