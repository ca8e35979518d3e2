/**
 * The tdist command line. `runCli(argv)` is what the `tdist` binary runs; it
 * is exported so tests and wrappers can call it in-process.
 *
 * ```ts
 * import { runCli } from "tdist";
 * process.exitCode = await runCli(["run", "--engine", "mocker", "--port", "0"]);
 * ```
 */
export { type CliIo, type CliOverrides, COMMANDS, createProgram, runCli } from "./cli.js";
export { CliEnv } from "./cli-env.js";
export { type ClusterStatus, formatStatus, readStatus } from "./commands/cluster-status.js";
