#!/usr/bin/env node
// Prints bench/results/<name>.json as a Markdown table, for docs/benchmarks.md.
//   node scripts/bench-table.mjs runtime frontend
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
for (const name of process.argv.slice(2)) {
  const report = JSON.parse(readFileSync(join(root, "bench/results", `${name}.json`), "utf8"));
  console.log(
    `Run ${report.date} on ${report.machine.cpus} CPUs (${report.machine.cpuModel}), Node ${report.machine.node}.`,
  );
  console.log(`Config: \`${JSON.stringify(report.config)}\`\n`);
  console.log("| result | variant | value | baseline | ratio | goal |");
  console.log("|---|---|---|---|---|---|");
  for (const r of report.results) {
    console.log(
      `| ${r.name} | ${r.variant} | ${r.value} ${r.unit} | ${r.baselineVariant} ${r.baselineValue} | ${r.ratio} | ${r.goal} |`,
    );
  }
  console.log();
}
