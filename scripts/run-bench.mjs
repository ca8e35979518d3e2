#!/usr/bin/env node
// npm run bench -- <name> [args]: builds the workspaces and the benchmarks, then runs bench/<name>.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const [name, ...args] = process.argv.slice(2);
if (!name) {
  console.error("usage: npm run bench -- <name> [--quick]");
  process.exit(2);
}
const run = (command, commandArgs) => {
  const result = spawnSync(command, commandArgs, { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
};
run("npm", ["run", "build", "--silent"]);
run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "bench/tsconfig.json"]);
const entry = join(root, "bench/dist", name, "main.js");
if (!existsSync(entry)) {
  console.error(`no benchmark named ${name} (looked for bench/${name}/main.ts)`);
  process.exit(2);
}
run(process.execPath, ["--expose-gc", entry, ...args]);
