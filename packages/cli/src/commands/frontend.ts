import { DistributedRuntime } from "@tdist/runtime";
import { Command, Option } from "commander";
import { addFrontendOptions, type FrontendFlagValues } from "../flags/frontend-flags.js";
import { addRuntimeOptions, type RuntimeFlagValues, runtimeEnv } from "../flags/runtime-flags.js";
import { serveUntilSignal } from "../lifecycle/serve-until-signal.js";
import { createLogger } from "../logging.js";
import type { CommandDefinition } from "./command-context.js";
import { requireKvEventsReachable, requireSharedDiscovery } from "./serving-checks.js";
import { frontendShutdown, printFrontendBanner, startHttpFrontend } from "./start-frontend.js";

type FrontendValues = RuntimeFlagValues & FrontendFlagValues & { allNamespaces?: boolean };

/** `tdist frontend`: the OpenAI HTTP frontend alone, finding workers through discovery. */
export const frontendCommand: CommandDefinition = {
  name: "frontend",
  register(program, context) {
    const command = new Command("frontend")
      .summary("the OpenAI HTTP frontend; finds workers through discovery (etcd)")
      .description(
        "Serves the OpenAI API for every model whose workers register in discovery.\n" +
          "Cluster recipe: --discovery etcd --etcd-endpoints http://HOST:2379 --nats-url nats://HOST:4222",
      );
    addFrontendOptions(command, "0.0.0.0");
    command.addOption(new Option("--all-namespaces", "serve models of every namespace, not only --namespace"));
    addRuntimeOptions(command);
    command.action(async (values: FrontendValues, self: Command) => {
      const env = runtimeEnv(self, values);
      requireSharedDiscovery("frontend", env);
      requireKvEventsReachable(values.routerMode, env);
      const logger = context.logger ?? createLogger({ level: values.logLevel, format: values.logFormat });
      const namespace = values.allNamespaces ? undefined : values.namespace;
      context.exitCode = await serveUntilSignal({ io: context.io, logger, ...context.serve }, async (startup) => {
        const runtime = startup.started(
          "the runtime",
          await DistributedRuntime.create({ env, logger, name: "frontend", signal: startup.signal }),
          (r) => r.shutdown({ graceMs: 2_000 }),
        );
        startup.checkpoint();
        const frontend = await startHttpFrontend(startup, runtime, values, env, logger, namespace);
        printFrontendBanner(
          context.io,
          frontend,
          "tdist frontend",
          `(discovery ${runtime.discovery.kind}, namespace ${namespace ?? "*"})`,
        );
        return { shutdownWaitsFor: frontendShutdown(frontend, env) };
      });
    });
    program.addCommand(command);
  },
};
