import { parseArgs } from "node:util";
import { HttpFrontend, type ServedModel, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, Env, type Logger, readEnv, TdistError } from "@tdist/runtime";
import type { CliIo } from "../cli-io.js";
import { flagsToEnv, runtimeFlags } from "../cli-options.js";
import { createLogger } from "../logging.js";
import { parseEngine, startWorker, type WorkerSpec } from "./engines.js";
import { numberFlag, parseRouterMode } from "./options.js";

/** What a long-running command hands back: how to stop it, and when it has stopped. */
export interface RunningCommand {
  readonly url?: string;
  stop(): Promise<void>;
}

const workerFlags = {
  engine: { type: "string" },
  model: { type: "string" },
  threads: { type: "string" },
  sequences: { type: "string" },
  "model-name": { type: "string" },
  "delay-ms": { type: "string" },
  speedup: { type: "string" },
  "no-kv-events": { type: "boolean" },
} as const;

const frontendFlags = {
  host: { type: "string" },
  port: { type: "string" },
  "router-mode": { type: "string" },
  "kv-overlap-weight": { type: "string" },
  "router-temperature": { type: "string" },
  "router-replica-sync": { type: "boolean" },
  "active-decode-blocks-threshold": { type: "string" },
  "active-prefill-tokens-threshold": { type: "string" },
} as const;

function optional<K extends string>(key: K, value: number | undefined): Partial<Record<K, number>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, number>);
}

function loggerFor(env: NodeJS.ProcessEnv): Logger {
  return createLogger(readEnv(Env.logLevel, env));
}

/** The worker flags of `run` and `worker`, checked. */
export function workerSpec(values: Record<string, string | boolean | undefined>, namespace: string): WorkerSpec {
  const engine = parseEngine(values.engine as string | undefined);
  if (values["no-kv-events"] === true && engine !== "llamacpp") {
    throw new TdistError("invalid_option", `--no-kv-events applies to --engine llamacpp only, got --engine ${engine}`);
  }
  return {
    engine,
    namespace,
    modelName: values["model-name"] as string | undefined,
    delayMs: numberFlag("delay-ms", values["delay-ms"] as string | undefined, { min: 0 }),
    speedup: numberFlag("speedup", values.speedup as string | undefined, { min: 0.001 }),
    model: values.model as string | undefined,
    threads: numberFlag("threads", values.threads as string | undefined, { min: 1, integer: true }),
    sequences: numberFlag("sequences", values.sequences as string | undefined, { min: 1, integer: true }),
    kvEvents: values["no-kv-events"] !== true,
  };
}

async function startFrontend(
  runtime: DistributedRuntime,
  values: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv,
  logger: Logger,
  namespace: string | undefined,
): Promise<HttpFrontend> {
  return HttpFrontend.start({
    runtime,
    createPipeline: TokenizerPipeline.create,
    host: (values.host as string | undefined) ?? "0.0.0.0",
    port:
      numberFlag("port", values.port as string | undefined, { min: 0, integer: true }) ?? readEnv(Env.httpPort, env),
    router: parseRouterMode(values["router-mode"] as string | undefined),
    kvRouter: {
      ...optional(
        "overlapWeight",
        numberFlag("kv-overlap-weight", values["kv-overlap-weight"] as string | undefined, { min: 0 }),
      ),
      ...optional(
        "temperature",
        numberFlag("router-temperature", values["router-temperature"] as string | undefined, { min: 0 }),
      ),
      ...(values["router-replica-sync"] ? { replicaSync: true } : {}),
      busyThresholds: {
        ...optional(
          "activeDecodeBlocks",
          numberFlag("active-decode-blocks-threshold", values["active-decode-blocks-threshold"] as string | undefined, {
            min: 0,
            max: 1,
          }),
        ),
        ...optional(
          "activePrefillTokens",
          numberFlag(
            "active-prefill-tokens-threshold",
            values["active-prefill-tokens-threshold"] as string | undefined,
            { min: 0 },
          ),
        ),
      },
    },
    ...(namespace ? { namespace } : {}),
    logger,
  });
}

/**
 * `tdist run`: frontend and N workers in one process on embedded discovery,
 * no servers needed. `npm start` runs this with defaults.
 */
export async function runCommand(argv: string[], io: CliIo): Promise<RunningCommand> {
  const { values } = parseArgs({
    args: argv,
    options: { ...runtimeFlags, ...workerFlags, ...frontendFlags, workers: { type: "string" } },
  });
  const env = flagsToEnv(values);
  const logger = loggerFor(env);
  const namespace = readEnv(Env.namespace, env);
  const spec = workerSpec(values, namespace);
  if (spec.kvEvents === false && values["router-mode"] === "kv") {
    throw new TdistError(
      "invalid_option",
      "--router-mode kv routes on the workers' KV events, which --no-kv-events turns off; use --router-mode kv-approx",
    );
  }
  const workers = numberFlag("workers", values.workers, { min: 1, integer: true }) ?? 1;
  // The first worker shares the frontend's runtime, so its requests take the local plane (no serialization);
  // further workers get runtimes of their own, as separate processes would.
  const frontendRuntime = await DistributedRuntime.create({ env, logger });
  const runtimes: DistributedRuntime[] = [frontendRuntime];
  const served: ServedModel[] = [await startWorker(frontendRuntime, spec)];
  for (let i = 1; i < workers; i++) {
    const runtime = await DistributedRuntime.create({ env, logger });
    runtimes.push(runtime);
    served.push(await startWorker(runtime, spec));
  }
  const frontend = await startFrontend(frontendRuntime, values, env, logger, namespace);
  await frontend.models.waitForModel(served[0]?.card.name, 30_000);
  io.out(`tdist serving the OpenAI API at ${frontend.url}/v1`);
  io.out(`  model:   ${served[0]?.card.name} (engine ${spec.engine}, ${workers} worker(s))`);
  for (const model of served) io.out(`  worker:  ${model.instanceId}`);
  io.out(`  try:     curl ${frontend.url}/v1/chat/completions -H 'content-type: application/json' \\`);
  io.out(
    `             -d '{"model":"${served[0]?.card.name}","messages":[{"role":"user","content":"Hello!"}],"max_tokens":16}'`,
  );
  return {
    url: frontend.url,
    async stop() {
      // In-flight requests get the shutdown grace, then are cancelled.
      await frontend.close({ graceMs: readEnv(Env.shutdownGraceMs, env) });
      // Each worker drains and closes its engine (a llama.cpp child process keeps the process alive otherwise).
      await Promise.all(served.map((model) => model.stop({ graceMs: 2_000 })));
      await Promise.all(runtimes.map((runtime) => runtime.shutdown({ graceMs: 2_000 })));
    },
  };
}

/** `tdist frontend`: the HTTP frontend alone, finding workers through discovery. */
export async function frontendCommand(argv: string[], io: CliIo): Promise<RunningCommand> {
  const { values } = parseArgs({
    args: argv,
    options: { ...runtimeFlags, ...frontendFlags, "all-namespaces": { type: "boolean" } },
  });
  const env = flagsToEnv(values);
  const logger = loggerFor(env);
  const runtime = await DistributedRuntime.create({ env, logger });
  const namespace = values["all-namespaces"] ? undefined : readEnv(Env.namespace, env);
  const frontend = await startFrontend(runtime, values, env, logger, namespace);
  io.out(`tdist frontend at ${frontend.url}/v1 (discovery ${runtime.discovery.kind}, namespace ${namespace ?? "*"})`);
  return {
    url: frontend.url,
    async stop() {
      await frontend.close({ graceMs: readEnv(Env.shutdownGraceMs, env) });
      await runtime.shutdown({ graceMs: 2_000 });
    },
  };
}

/** `tdist worker --engine llamacpp|mocker|echo`: one model worker registering with discovery. */
export async function workerCommand(argv: string[], io: CliIo): Promise<RunningCommand> {
  const { values } = parseArgs({ args: argv, options: { ...runtimeFlags, ...workerFlags } });
  const env = flagsToEnv(values);
  const logger = loggerFor(env);
  const namespace = readEnv(Env.namespace, env);
  const runtime = await DistributedRuntime.create({ env, logger });
  const served = await startWorker(runtime, workerSpec(values, namespace));
  io.out(
    JSON.stringify({
      event: "worker-ready",
      model: served.card.name,
      engine: served.card.engine,
      instanceId: served.instanceId,
    }),
  );
  return {
    async stop() {
      // Deregisters, lets in-flight streams run for the shutdown grace, then closes the engine.
      await served.stop({ graceMs: readEnv(Env.shutdownGraceMs, env) });
      await runtime.shutdown();
    },
  };
}
