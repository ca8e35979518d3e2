import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { HttpFrontend, type HttpFrontendOptions, TokenizerPipeline } from "@tdist/llm";
import { type DistributedRuntime, Env, type Logger, readEnv, TdistError } from "@tdist/runtime";
import type { CliIo } from "../cli-io.js";
import { type FrontendFlagValues, frontendSettings } from "../flags/frontend-flags.js";
import type { Serving } from "../lifecycle/serve-until-signal.js";
import type { Startup } from "../lifecycle/startup.js";
import { readStatus } from "./cluster-status.js";

/** Starts the HTTP frontend as a step of `startup`; a port in use is a clear error, not a stack. */
export async function startHttpFrontend(
  startup: Startup,
  runtime: DistributedRuntime,
  values: FrontendFlagValues,
  env: NodeJS.ProcessEnv,
  logger: Logger,
  namespace: string | undefined,
): Promise<HttpFrontend> {
  const settings = frontendSettings(values);
  const security = readFrontendSecurity(values);
  let frontend: HttpFrontend;
  try {
    frontend = await HttpFrontend.start({
      runtime,
      createPipeline: TokenizerPipeline.create,
      host: settings.host,
      port: settings.port,
      router: settings.router,
      kvRouter: settings.kvRouter,
      disaggregation: settings.disaggregation,
      ...security,
      metricsAuth: settings.metricsAuth ?? false,
      ...(settings.maxConcurrentRequests === undefined
        ? {}
        : { maxConcurrentRequests: settings.maxConcurrentRequests }),
      ...(settings.corsOrigins.length > 0 ? { corsOrigins: settings.corsOrigins } : {}),
      ...(settings.migrationLimit === undefined ? {} : { migrationLimit: settings.migrationLimit }),
      ...(namespace ? { namespace } : {}),
      // `tdist status --url` reads this: the only window onto memory discovery from outside the process.
      status: () => readStatus(runtime.discovery),
      logger: logger.child({ component: "frontend" }),
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") {
      const why = {
        EADDRINUSE: "is already in use",
        EACCES: "needs privileges",
        EADDRNOTAVAIL: "is not on this machine",
      }[code];
      throw new TdistError(
        "invalid_option",
        `cannot listen on ${settings.host}:${settings.port}: the ${code === "EADDRNOTAVAIL" ? "address" : "port"} ${why}; ` +
          "choose another with --port / --host (TDIST_HTTP_PORT, TDIST_HTTP_HOST)",
        { cause: err },
      );
    }
    throw err;
  }
  const graceMs = readEnv(Env.shutdownGraceMs, env);
  return startup.started("the HTTP frontend", frontend, (f) => f.close({ graceMs }));
}

/**
 * The frontend's API keys and TLS material, from the flags and the files
 * they name. Errors name the flag and the file, never a key.
 */
export function readFrontendSecurity(values: FrontendFlagValues): Pick<HttpFrontendOptions, "apiKeys" | "tls"> {
  const inline = nonEmpty(values.apiKey);
  const file = nonEmpty(values.apiKeyFile);
  if (inline !== undefined && file !== undefined) {
    throw new TdistError(
      "invalid_option",
      "--api-key (TDIST_API_KEY) and --api-key-file (TDIST_API_KEY_FILE) are both set; set one",
    );
  }
  let apiKeys: string[] | undefined;
  if (inline !== undefined) apiKeys = inline.split(",").map((key) => key.trim());
  if (file !== undefined) apiKeys = keysOfFile(readText(file, "--api-key-file (TDIST_API_KEY_FILE)"));
  if (apiKeys?.some((key) => key === "")) {
    throw new TdistError(
      "invalid_option",
      file === undefined
        ? "--api-key (TDIST_API_KEY) has an empty key: give keys separated by commas"
        : `--api-key-file (TDIST_API_KEY_FILE): ${file} holds no key`,
    );
  }
  if (values.metricsAccess === "api-key" && apiKeys === undefined) {
    throw new TdistError(
      "invalid_option",
      "--metrics-access api-key (TDIST_METRICS_ACCESS) needs API keys: --api-key-file or --api-key",
    );
  }
  const cert = nonEmpty(values.tlsCert);
  const key = nonEmpty(values.tlsKey);
  if ((cert === undefined) !== (key === undefined)) {
    throw new TdistError(
      "invalid_option",
      "--tls-cert (TDIST_HTTP_TLS_CERT) and --tls-key (TDIST_HTTP_TLS_KEY) go together: give both or neither",
    );
  }
  return {
    ...(apiKeys === undefined ? {} : { apiKeys }),
    ...(cert === undefined || key === undefined
      ? {}
      : {
          tls: {
            cert: readText(cert, "--tls-cert (TDIST_HTTP_TLS_CERT)"),
            key: readText(key, "--tls-key (TDIST_HTTP_TLS_KEY)"),
          },
        }),
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value;
}

/** One key a line; blank lines and `#` comments skipped (a Kubernetes secret's file, or a hand-kept list). */
function keysOfFile(text: string): string[] {
  const keys = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
  return keys.length === 0 ? [""] : keys;
}

function readText(path: string, flag: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new TdistError(
      "invalid_option",
      `${flag}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      { cause: err },
    );
  }
}

/** The banner's first line: the address actually bound, and the URL to call. */
export function boundAddress(frontend: HttpFrontend): string {
  const address = frontend.app.server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const everywhere = address.address === "0.0.0.0" || address.address === "::";
  return `${host}:${address.port}${everywhere ? " (every interface)" : ""}`;
}

/** Writes the "what now" lines for a started frontend. */
export function printFrontendBanner(io: CliIo, frontend: HttpFrontend, heading: string, detail = ""): void {
  io.out(`${heading} at ${frontend.url}/v1${detail ? ` ${detail}` : ""}`);
  io.out(`  listening: ${boundAddress(frontend)}`);
  if (frontend.requiresApiKey) io.out("  api key:   required (Authorization: Bearer KEY); /health and /live are open");
}

/** What a frontend's shutdown waits for, for the "shutting down" line. */
export function frontendShutdown(frontend: HttpFrontend, env: NodeJS.ProcessEnv): Serving["shutdownWaitsFor"] {
  return async () => {
    const gauge = await frontend.metrics.inflight.get();
    const inFlight = gauge.values.reduce((sum, sample) => sum + sample.value, 0);
    const graceS = readEnv(Env.shutdownGraceMs, env) / 1000;
    return inFlight === 0
      ? "no requests in flight"
      : `${inFlight} request(s) in flight get up to ${graceS} s to finish (TDIST_SHUTDOWN_GRACE_MS), then are cancelled`;
  };
}
