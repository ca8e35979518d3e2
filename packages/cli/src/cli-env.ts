import { declareEnvVars, enumVar, stringVar } from "@tdist/runtime";

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
});
