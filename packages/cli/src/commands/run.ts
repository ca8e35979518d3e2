import type { ServedModel, WorkerRole } from "@tdist/llm";
import { DistributedRuntime, TdistError } from "@tdist/runtime";
import { Command, Option } from "commander";
import { addFrontendOptions, type FrontendFlagValues } from "../flags/frontend-flags.js";
import { numberArg } from "../flags/number-parser.js";
import { addRuntimeOptions, type RuntimeFlagValues, runtimeEnv } from "../flags/runtime-flags.js";
import { addWorkerOptions, checkRole, type WorkerFlagValues, workerSpec } from "../flags/worker-flags.js";
import { serveUntilSignal } from "../lifecycle/serve-until-signal.js";
import { createLogger } from "../logging.js";
import type { CommandContext, CommandDefinition } from "./command-context.js";
import { startWorker } from "./engines.js";
import { frontendShutdown, printFrontendBanner, startHttpFrontend } from "./start-frontend.js";

type RunValues = RuntimeFlagValues &
  WorkerFlagValues &
  FrontendFlagValues & { workers: number; prefillWorkers?: number; decodeWorkers?: number };

/** `tdist run`: the frontend and N workers in one process on the embedded planes; `npm start` runs it. */
export const runCommand: CommandDefinition = {
  name: "run",
  register(program, context) {
    const command = new Command("run")
      .summary("frontend + workers in one process, no servers needed (npm start)")
      .description(
        "Serves the OpenAI API with one or more workers in this process, on embedded discovery and planes.\n" +
          "Defaults to llama.cpp on the built-in tiny model (random weights), bound to 127.0.0.1.",
      );
    addWorkerOptions(command, false);
    command.addOption(
      new Option("--workers <n>", "aggregated workers to start, each with its own runtime")
        .argParser(numberArg({ min: 1, integer: true }))
        .default(1),
    );
    command.addOption(
      new Option("--prefill-workers <n>", "disaggregated: prefill workers (with --decode-workers)").argParser(
        numberArg({ min: 0, integer: true }),
      ),
    );
    command.addOption(
      new Option("--decode-workers <n>", "disaggregated: decode workers, instead of --workers").argParser(
        numberArg({ min: 1, integer: true }),
      ),
    );
    addFrontendOptions(command, "127.0.0.1");
    addRuntimeOptions(command);
    command.action(async (values: RunValues, self: Command) => {
      context.exitCode = await run(self, values, context);
    });
    program.addCommand(command);
  },
};

async function run(command: Command, values: RunValues, context: CommandContext): Promise<number> {
  // Everything is checked before anything starts.
  const env = runtimeEnv(command, values);
  const spec = workerSpec(command, values, values.namespace);
  const roles = workerRoles(command, values);
  for (const role of new Set(roles))
    checkRole(spec.engine, role, role === "prefill" ? "--prefill-workers" : "--decode-workers");
  if (spec.kvEvents === false && values.routerMode === "kv") {
    throw new TdistError(
      "invalid_option",
      "--router-mode kv routes on the workers' KV events, which --no-kv-events turns off; use --router-mode kv-approx",
    );
  }
  const logger = context.logger ?? createLogger({ level: values.logLevel, format: values.logFormat });
  const { io } = context;
  return serveUntilSignal({ io, logger, ...context.serve }, async (startup) => {
    const runtimes: DistributedRuntime[] = [];
    const newRuntime = async (name: string): Promise<DistributedRuntime> => {
      const runtime = await DistributedRuntime.create({ env, logger, name, signal: startup.signal });
      runtimes.push(runtime);
      return startup.started(`runtime ${name}`, runtime, (r) => r.shutdown({ graceMs: 2_000 }));
    };
    // The first worker shares the frontend's runtime, so its requests take the local plane (no
    // serialization); further workers get runtimes of their own, as separate processes would.
    // Serving (decode or aggregated) workers come first, so the frontend's runtime holds one of them.
    const served: ServedModel[] = [];
    for (const [index, role] of roles.entries()) {
      const i = index + 1;
      const runtime = i === 1 ? await newRuntime("frontend") : await newRuntime(`worker-${i}`);
      startup.checkpoint();
      const model = await startWorker(runtime, { ...spec, role });
      served.push(startup.started(`worker ${i}`, model, (m) => m.stop({ graceMs: 2_000 })));
      startup.checkpoint();
    }
    const [first] = served;
    const frontendRuntime = runtimes[0];
    if (first === undefined || frontendRuntime === undefined) throw new TdistError("internal", "no worker started");
    const frontend = await startHttpFrontend(startup, frontendRuntime, values, env, logger, values.namespace);
    await frontend.models.waitForModel(first.card.name, 30_000);
    printFrontendBanner(io, frontend, "tdist serving the OpenAI API");
    io.out(`  model:     ${first.card.name} (engine ${spec.engine}, ${topology(roles)})`);
    for (const model of served) {
      io.out(
        `  worker:    ${model.instanceId}${model.card.role === "prefill" || model.card.role === "decode" ? ` (${model.card.role})` : ""}`,
      );
    }
    io.out(`  try:       curl ${frontend.url}/v1/chat/completions -H 'content-type: application/json' \\`);
    io.out(
      `               -d '{"model":"${first.card.name}","messages":[{"role":"user","content":"Hello!"}],"max_tokens":16}'`,
    );
    if (values.host === "127.0.0.1") io.out("  (only this machine can connect: --host 0.0.0.0 serves the network)");
    return { shutdownWaitsFor: frontendShutdown(frontend, env) };
  });
}

/**
 * The role of each worker to start, serving ones first: `--workers`
 * aggregated ones, or `--decode-workers` and `--prefill-workers`. Mixing
 * the two, or prefill workers with nothing to decode, is refused.
 */
function workerRoles(command: Command, values: RunValues): WorkerRole[] {
  const explicitWorkers = command.getOptionValueSource("workers") === "cli";
  const prefill = values.prefillWorkers;
  const decode = values.decodeWorkers;
  if (prefill === undefined && decode === undefined) return Array<WorkerRole>(values.workers).fill("aggregated");
  if (explicitWorkers) {
    throw new TdistError(
      "invalid_option",
      "--workers counts aggregated workers; with --prefill-workers/--decode-workers give the decode count as --decode-workers",
    );
  }
  if (decode === undefined) {
    throw new TdistError(
      "invalid_option",
      "--prefill-workers needs --decode-workers: prefill workers only compute prompts for decode workers",
    );
  }
  return [...Array<WorkerRole>(decode).fill("decode"), ...Array<WorkerRole>(prefill ?? 0).fill("prefill")];
}

function topology(roles: readonly WorkerRole[]): string {
  const count = (role: WorkerRole): number => roles.filter((r) => r === role).length;
  if (count("aggregated") === roles.length) return `${roles.length} worker(s)`;
  return `${count("prefill")} prefill + ${count("decode")} decode worker(s)`;
}
