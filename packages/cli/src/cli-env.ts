import { declareEnvVars, enumVar, integerVar, stringVar } from "@tdist/runtime";

/** The `TDIST_*` variables the command line owns (the runtime's are in `Env`). */
export const CliEnv = declareEnvVars("tdist (cli)", {
  logFormat: enumVar(
    "TDIST_LOG_FORMAT",
    ["auto", "pretty", "json"],
    "auto",
    "Log line format on stderr: pretty (human-readable), json (one object a line), or auto (pretty on a terminal, json otherwise).",
  ),
  httpHost: stringVar(
    "TDIST_HTTP_HOST",
    "",
    "Address the HTTP frontend binds; defaults to 127.0.0.1 for `tdist run` and 0.0.0.0 for `tdist frontend`.",
  ),
  corsOrigin: stringVar(
    "TDIST_CORS_ORIGIN",
    "",
    "Origins (comma-separated, or *) allowed to call the HTTP frontend from a browser; empty sends no CORS headers.",
  ),
  // The HTTP frontend's security. Its TLS variables are TDIST_HTTP_TLS_*: TDIST_TCP_TLS_* is the request plane's.
  apiKey: stringVar(
    "TDIST_API_KEY",
    "",
    "API keys (comma-separated) the HTTP frontend accepts as Authorization: Bearer KEY; empty: no key needed. " +
      "/health and /live stay open.",
  ),
  apiKeyFile: stringVar(
    "TDIST_API_KEY_FILE",
    "",
    "File of API keys, one a line (blank lines and # comments skipped), instead of TDIST_API_KEY: a mounted secret.",
  ),
  metricsAccess: enumVar(
    "TDIST_METRICS_ACCESS",
    ["open", "api-key"],
    "open",
    "With API keys: whether the frontend's /metrics is open (Prometheus scrapers usually hold no key) or needs a key.",
  ),
  httpTlsCert: stringVar(
    "TDIST_HTTP_TLS_CERT",
    "",
    "PEM certificate (chain) the HTTP frontend serves HTTPS with; needs TDIST_HTTP_TLS_KEY.",
  ),
  httpTlsKey: stringVar("TDIST_HTTP_TLS_KEY", "", "Unencrypted PEM private key of TDIST_HTTP_TLS_CERT."),
  maxConcurrentRequests: integerVar(
    "TDIST_HTTP_MAX_CONCURRENT_REQUESTS",
    0,
    "Model requests the HTTP frontend serves at once; more get 429 with Retry-After. 0: no cap.",
    { min: 0 },
  ),
});
