import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** One measured number, compared with a baseline measured in the same run. */
export interface BenchResult {
  name: string;
  variant: string;
  value: number;
  unit: string;
  baselineVariant: string;
  baselineValue: number;
  ratio: number;
  goal: string;
}

export interface BenchReport {
  bench: string;
  date: string;
  machine: { cpus: number; node: string; cpuModel: string };
  config: Record<string, unknown>;
  results: BenchResult[];
}

export function result(
  name: string,
  variant: string,
  value: number,
  unit: string,
  baselineVariant: string,
  baselineValue: number,
  goal: string,
): BenchResult {
  return {
    name,
    variant,
    value: round(value),
    unit,
    baselineVariant,
    baselineValue: round(baselineValue),
    ratio: round(value / baselineValue, 3),
    goal,
  };
}

function round(value: number, digits = 2): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "results");

/** Prints the table and writes `bench/results/<bench>.json` in the shape DESIGN.md fixes. */
export function writeReport(bench: string, config: Record<string, unknown>, results: BenchResult[]): BenchReport {
  const report: BenchReport = {
    bench,
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version, cpuModel: cpus()[0]?.model ?? "unknown" },
    config,
    results,
  };
  console.table(
    results.map((r) => ({
      name: r.name,
      variant: r.variant,
      value: r.value,
      unit: r.unit,
      baseline: `${r.baselineVariant}=${r.baselineValue}`,
      ratio: r.ratio,
      goal: r.goal,
    })),
  );
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${bench}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`wrote ${file}`);
  return report;
}
