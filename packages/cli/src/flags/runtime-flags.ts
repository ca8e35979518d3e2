import { Env, TdistError } from "@tdist/runtime";
import type { Command } from "commander";
import { CliEnv } from "../cli-env.js";
import { envOption } from "./env-option.js";

/** The runtime flags every command that builds a runtime takes, as commander parsed them. */
export interface RuntimeFlagValues {
  discovery: "memory" | "etcd";
  etcdEndpoints: readonly string[];
  natsUrl: string;
  requestPlane: "tcp" | "nats";
  eventPlane: "memory" | "nats";
  namespace: string;
  logLevel: string;
  logFormat: "auto" | "pretty" | "json";
}

export function addRuntimeOptions(command: Command): Command {
  return command
    .addOption(envOption("--discovery <kind>", "discovery backend: memory (this process only) or etcd", Env.discovery))
    .addOption(envOption("--etcd-endpoints <urls>", "etcd client URLs, comma-separated", Env.etcdEndpoints))
    .addOption(
      envOption(
        "--nats-url <url>",
        "NATS server for the event plane (KV events), queues and the NATS request plane; giving it turns the event plane to nats unless --event-plane says otherwise",
        Env.natsUrl,
      ),
    )
    .addOption(envOption("--request-plane <kind>", "request plane across processes: tcp or nats", Env.requestPlane))
    .addOption(envOption("--event-plane <kind>", "event plane and work queues: memory or nats", Env.eventPlane))
    .addOption(envOption("--namespace <name>", "namespace components register under", Env.namespace))
    .addOption(envOption("--log-level <level>", "trace, debug, info, warn, error or silent", Env.logLevel))
    .addOption(
      envOption("--log-format <format>", "auto (pretty on a terminal, else json), pretty or json", CliEnv.logFormat),
    );
}

/**
 * The environment the runtime reads, with the flags applied: the runtime
 * parses configuration only through its `TDIST_*` variables.
 */
export function runtimeEnv(
  command: Command,
  values: RuntimeFlagValues,
  base: NodeJS.ProcessEnv = process.env,
): NodeJS.ProcessEnv {
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(values.namespace)) {
    throw new TdistError(
      "invalid_option",
      `--namespace must be lower-case letters, digits, '-' or '_' (at most 63), got ${JSON.stringify(values.namespace)}`,
    );
  }
  // A NATS URL the user gave means they run NATS: KV events should use it. Only an explicit
  // --event-plane (or TDIST_EVENT_PLANE) keeps them in memory then.
  const natsGiven = command.getOptionValueSource("natsUrl") !== "default";
  const eventPlaneGiven = command.getOptionValueSource("eventPlane") !== "default";
  const eventPlane = natsGiven && !eventPlaneGiven ? "nats" : values.eventPlane;
  return {
    ...base,
    [Env.discovery.name]: values.discovery,
    [Env.etcdEndpoints.name]: values.etcdEndpoints.join(","),
    [Env.natsUrl.name]: values.natsUrl,
    [Env.requestPlane.name]: values.requestPlane,
    [Env.eventPlane.name]: eventPlane,
    [Env.namespace.name]: values.namespace,
    [Env.logLevel.name]: values.logLevel,
  };
}
