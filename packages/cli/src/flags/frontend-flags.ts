import { DEFAULT_DISAGGREGATION, type HttpFrontendOptions, LLM_ROUTER_MODES, type LlmRouterMode } from "@tdist/llm";
import { Env } from "@tdist/runtime";
import { type Command, Option } from "commander";
import { CliEnv } from "../cli-env.js";
import { envOption } from "./env-option.js";
import { numberArg } from "./number-parser.js";

export interface FrontendFlagValues {
  host: string;
  port: number;
  routerMode: LlmRouterMode;
  kvOverlapWeight?: number;
  routerTemperature?: number;
  routerReplicaSync?: boolean;
  activeDecodeBlocksThreshold?: number;
  activePrefillTokensThreshold?: number;
  corsOrigin?: string;
  disaggMinUncachedTokens: number;
  disaggPrefillBusyTokens: number;
  apiKey?: string;
  apiKeyFile?: string;
  metricsAccess: "open" | "api-key";
  tlsCert?: string;
  tlsKey?: string;
  maxConcurrentRequests: number;
  migrationLimit?: number;
}

/** The HTTP frontend's flags; `defaultHost` differs between a laptop (`run`) and a server (`frontend`). */
export function addFrontendOptions(command: Command, defaultHost: string): Command {
  return command
    .addOption(
      envOption("--host <address>", "address to bind (0.0.0.0: every interface)", CliEnv.httpHost, defaultHost),
    )
    .addOption(envOption("--port <port>", "HTTP port (0 picks a free one)", Env.httpPort))
    .addOption(
      new Option("--router-mode <mode>", "how requests pick a worker").choices(LLM_ROUTER_MODES).default("round-robin"),
    )
    .addOption(
      new Option("--kv-overlap-weight <w>", "kv routers: weight of cached blocks against load (default 16)").argParser(
        numberArg({ min: 0 }),
      ),
    )
    .addOption(
      new Option("--router-temperature <t>", "kv routers: softmax sampling temperature (0: always the best)").argParser(
        numberArg({ min: 0 }),
      ),
    )
    .addOption(new Option("--router-replica-sync", "kv routers: share routing decisions with other frontends"))
    .addOption(
      new Option(
        "--active-decode-blocks-threshold <f>",
        "kv routers: a worker with more than this fraction of its KV blocks in use is busy; all busy: 503",
      ).argParser(numberArg({ min: 0, max: 1 })),
    )
    .addOption(
      new Option(
        "--active-prefill-tokens-threshold <n>",
        "kv routers: a worker with more prompt tokens than this waiting is busy; all busy: 503",
      ).argParser(numberArg({ min: 0 })),
    )
    .addOption(
      new Option(
        "--disagg-min-uncached-tokens <n>",
        "with prefill workers: prefill on one only when the decode worker would compute more prompt tokens than this",
      )
        .argParser(numberArg({ min: 0, integer: true }))
        .default(DEFAULT_DISAGGREGATION.minUncachedTokens),
    )
    .addOption(
      new Option(
        "--disagg-prefill-busy-tokens <n>",
        "with prefill workers: one with more prompt tokens than this queued is busy; the decode worker prefills",
      )
        .argParser(numberArg({ min: 0, integer: true }))
        .default(DEFAULT_DISAGGREGATION.prefillBusyTokens),
    )
    .addOption(
      envOption(
        "--cors-origin <origins>",
        "let browsers on these origins call the API (comma-separated, or *); off by default",
        CliEnv.corsOrigin,
      ),
    )
    .addOption(
      envOption(
        "--api-key <keys>",
        "require one of these API keys (comma-separated) as Authorization: Bearer KEY; prefer --api-key-file, " +
          "as a command line is visible to other users of the machine",
        CliEnv.apiKey,
      ),
    )
    .addOption(
      envOption("--api-key-file <file>", "require one of the API keys in this file (one a line)", CliEnv.apiKeyFile),
    )
    .addOption(
      envOption(
        "--metrics-access <access>",
        "with API keys: /metrics open (for Prometheus scrapers without a key) or api-key",
        CliEnv.metricsAccess,
      ),
    )
    .addOption(
      envOption("--tls-cert <file>", "serve HTTPS with this PEM certificate (with --tls-key)", CliEnv.httpTlsCert),
    )
    .addOption(envOption("--tls-key <file>", "private key (PEM) of --tls-cert", CliEnv.httpTlsKey))
    .addOption(
      envOption(
        "--max-concurrent-requests <n>",
        "model requests served at once; more get 429 with Retry-After (0: no cap)",
        CliEnv.maxConcurrentRequests,
      ),
    )
    .addOption(
      new Option(
        "--migration-limit <n>",
        "times a request moves to another worker when its worker fails mid-stream (0: never; default: each model card's, else 3)",
      ).argParser(numberArg({ min: 0, max: 1000, integer: true })),
    );
}

function optional<K extends string, V>(key: K, value: V | undefined): Partial<Record<K, V>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, V>);
}

/** The frontend's options from its flags (runtime, pipeline and logger come from the command). */
export function frontendSettings(values: FrontendFlagValues): Pick<
  HttpFrontendOptions,
  "host" | "port" | "router" | "kvRouter" | "maxConcurrentRequests" | "metricsAuth" | "migrationLimit"
> & {
  corsOrigins: string[];
  disaggregation: { minUncachedTokens: number; prefillBusyTokens: number };
} {
  return {
    host: values.host,
    disaggregation: {
      minUncachedTokens: values.disaggMinUncachedTokens,
      prefillBusyTokens: values.disaggPrefillBusyTokens,
    },
    port: values.port,
    router: values.routerMode,
    kvRouter: {
      ...optional("overlapWeight", values.kvOverlapWeight),
      ...optional("temperature", values.routerTemperature),
      ...(values.routerReplicaSync ? { replicaSync: true } : {}),
      busyThresholds: {
        ...optional("activeDecodeBlocks", values.activeDecodeBlocksThreshold),
        ...optional("activePrefillTokens", values.activePrefillTokensThreshold),
      },
    },
    ...(values.maxConcurrentRequests > 0 ? { maxConcurrentRequests: values.maxConcurrentRequests } : {}),
    metricsAuth: values.metricsAccess === "api-key",
    ...optional("migrationLimit", values.migrationLimit),
    corsOrigins: (values.corsOrigin ?? "")
      .split(",")
      .map((origin) => origin.trim())
      .filter((origin) => origin !== ""),
  };
}
