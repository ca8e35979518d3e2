import { DistributedRuntime, Env, readEnv, TdistError } from "@tdist/runtime";
import { Command, Option } from "commander";
import { CliEnv } from "../cli-env.js";
import { envOption } from "../flags/env-option.js";
import { addRuntimeOptions, type RuntimeFlagValues, runtimeEnv } from "../flags/runtime-flags.js";
import { createLogger } from "../logging.js";
import { type ClusterStatus, formatStatus, readStatus } from "./cluster-status.js";
import type { CommandDefinition } from "./command-context.js";

type StatusValues = RuntimeFlagValues & { json?: boolean; url?: string; apiKey?: string };

/** The frontend route that serves its runtime's discovery view (see `tdist run`). */
export const STATUS_ROUTE = "/status";

/** `tdist status`: what is registered, read from discovery or from a running frontend. */
export const statusCommand: CommandDefinition = {
  name: "status",
  register(program, context) {
    const command = new Command("status")
      .summary("namespaces, endpoints, instances and models registered in discovery")
      .description(
        "Lists what is registered: from etcd (--discovery etcd), or from a running `tdist run` or\n" +
          "`tdist frontend` through its HTTP port (--url http://127.0.0.1:8000), which also works for\n" +
          "memory discovery, private to that process.",
      )
      .addOption(new Option("--json", "print JSON instead of a table"))
      .addOption(
        new Option(
          "--url <url>",
          "ask a running tdist run / tdist frontend at this URL (https: a private CA goes in NODE_EXTRA_CA_CERTS)",
        ),
      )
      .addOption(
        envOption(
          "--api-key <key>",
          "with --url: the frontend's API key (of several, the first is sent)",
          CliEnv.apiKey,
        ),
      );
    addRuntimeOptions(command);
    command.action(async (values: StatusValues, self: Command) => {
      const status = values.url
        ? await statusFromFrontend(values.url, values.apiKey)
        : await statusFromDiscovery(self, values);
      context.io.out(values.json ? JSON.stringify(status, null, 2) : formatStatus(status));
      context.exitCode = 0;
    });
    program.addCommand(command);
  },
};

async function statusFromDiscovery(command: Command, values: StatusValues): Promise<ClusterStatus> {
  const env = runtimeEnv(command, values);
  if (readEnv(Env.discovery, env) === "memory") {
    throw new TdistError(
      "invalid_option",
      "memory discovery is private to one process: use --discovery etcd --etcd-endpoints URL, " +
        "or --url http://127.0.0.1:8000 to ask a running `tdist run`",
    );
  }
  const level = values.logLevel === "info" ? "warn" : values.logLevel;
  const logger = createLogger({ level, format: values.logFormat });
  // A status query should not wait the servers' 30 s for etcd to come up, unless told to.
  const waitMs = env[Env.startupTimeoutMs.name] ? {} : { startupTimeoutMs: 5_000 };
  const runtime = await DistributedRuntime.create({ env, logger, ...waitMs });
  try {
    return await readStatus(runtime.discovery);
  } finally {
    await runtime.shutdown({ graceMs: 0 });
  }
}

async function statusFromFrontend(url: string, apiKeys: string | undefined): Promise<ClusterStatus> {
  const apiKey = apiKeys?.split(",")[0]?.trim();
  let target: URL;
  try {
    target = new URL(STATUS_ROUTE, url);
  } catch (err) {
    throw new TdistError("invalid_option", `--url must be an http(s) URL, got ${JSON.stringify(url)}`, { cause: err });
  }
  let response: Response;
  try {
    response = await fetch(target, {
      signal: AbortSignal.timeout(5_000),
      ...(apiKey ? { headers: { authorization: `Bearer ${apiKey}` } } : {}),
    });
  } catch (err) {
    throw new TdistError("cannot_connect", `no tdist frontend answered at ${target.origin}`, { cause: err });
  }
  if (response.status === 401) {
    throw new TdistError(
      "unauthorized",
      apiKey
        ? `${target.origin} refused the API key given (--api-key, TDIST_API_KEY)`
        : `${target.origin} requires an API key: --api-key KEY (TDIST_API_KEY)`,
    );
  }
  if (!response.ok) {
    throw new TdistError("cannot_connect", `${target.href} answered ${response.status}: is it a tdist frontend?`);
  }
  return (await response.json()) as ClusterStatus;
}
