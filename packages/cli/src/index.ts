/**
 * The tdist command line. `runCli(argv)` is what the `tdist` binary runs; it
 * is exported so tests and wrappers can call it in-process.
 */
export { type CliIo, runCli } from "./cli.js";
export { flagsToEnv, runtimeFlags } from "./cli-options.js";
export { frontendCommand, type RunningCommand, runCommand, workerCommand } from "./commands/serve.js";
export { type ClusterStatus, formatStatus, readStatus } from "./commands/status.js";
