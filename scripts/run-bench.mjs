#!/usr/bin/env node
// npm run bench -- <name> [args]: builds the workspaces and the benchmarks, then runs bench/<name>.
// With no name it lists the benchmarks; a name that is not one fails before anything is built.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { formatBenchmarkList, listBenchmarks, parseBenchArgs } from "./bench-args.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const benchmarks = listBenchmarks(join(root, "bench"));
const command = parseBenchArgs(
  process.argv.slice(2),
  benchmarks.map((b) => b.name),
);
if (command.kind === "list") {
  console.log(formatBenchmarkList(benchmarks));
  process.exit(0);
}
if (command.kind === "usage-error") {
  console.error(`npm run bench: ${command.reason}\n\n${formatBenchmarkList(benchmarks)}`);
  process.exit(2);
}
const tsc = join(root, "node_modules/typescript/bin/tsc");
const run = (/** @type {string[]} */ commandArgs) => {
  const result = spawnSync(process.execPath, commandArgs, { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
};
// Incremental: an unchanged tree builds in about a second. Every workspace, not only those
// bench/ imports: some benchmarks spawn the CLI.
run([tsc, "-b", "tsconfig.build.json", "bench/tsconfig.json"]);
run(["--expose-gc", join(root, "bench/dist", command.name, "main.js"), ...command.args]);
