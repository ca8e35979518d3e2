import { DistributedRuntime, Env, readEnv } from "@tdist/runtime";
import { Command } from "commander";
import { addRuntimeOptions, type RuntimeFlagValues, runtimeEnv } from "../flags/runtime-flags.js";
import { addWorkerOptions, type WorkerFlagValues, workerSpec } from "../flags/worker-flags.js";
import { serveUntilSignal } from "../lifecycle/serve-until-signal.js";
import { createLogger } from "../logging.js";
import type { CommandDefinition } from "./command-context.js";
import { startWorker } from "./engines.js";
import { requireSharedDiscovery, warnIfKvEventsStayLocal } from "./serving-checks.js";

type WorkerValues = RuntimeFlagValues & WorkerFlagValues;

/** `tdist worker`: one model worker registering its model card in discovery. */
export const workerCommand: CommandDefinition = {
  name: "worker",
  register(program, context) {
    const command = new Command("worker")
      .summary("one model worker; registers its model in discovery (etcd)")
      .description(
        "Serves one engine's model as a worker that frontends find through discovery.\n" +
          "Cluster recipe: --discovery etcd --etcd-endpoints http://HOST:2379 --nats-url nats://HOST:4222\n" +
          'Prints one JSON line {"event":"worker-ready",...} on stdout when it serves.',
      );
    addWorkerOptions(command);
    addRuntimeOptions(command);
    command.action(async (values: WorkerValues, self: Command) => {
      const env = runtimeEnv(self, values);
      requireSharedDiscovery("worker", env);
      const spec = workerSpec(self, values, values.namespace);
      const logger = context.logger ?? createLogger({ level: values.logLevel, format: values.logFormat });
      warnIfKvEventsStayLocal(
        spec.engine === "mocker" || (spec.engine === "llamacpp" && spec.kvEvents !== false),
        env,
        logger,
      );
      const graceMs = readEnv(Env.shutdownGraceMs, env);
      context.exitCode = await serveUntilSignal({ io: context.io, logger, ...context.serve }, async (startup) => {
        const runtime = startup.started(
          "the runtime",
          await DistributedRuntime.create({ env, logger, name: "worker", signal: startup.signal }),
          (r) => r.shutdown(),
        );
        startup.checkpoint();
        // Stopping deregisters, lets in-flight streams run for the shutdown grace, then closes the engine.
        const served = startup.started("the worker", await startWorker(runtime, spec), (m) => m.stop({ graceMs }));
        context.io.out(
          JSON.stringify({
            event: "worker-ready",
            model: served.card.name,
            engine: served.card.engine,
            instanceId: served.instanceId,
          }),
        );
        return {
          shutdownWaitsFor: async () =>
            `deregistered; in-flight streams get up to ${graceMs / 1000} s to finish (TDIST_SHUTDOWN_GRACE_MS)`,
        };
      });
    });
    program.addCommand(command);
  },
};
