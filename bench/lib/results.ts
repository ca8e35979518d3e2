import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { basename, dirname, join } from "node:path";
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

// This file runs as bench/dist/lib/results.js in a benchmark and as bench/lib/results.ts in tests.
const libDir = dirname(fileURLToPath(import.meta.url));
const benchDir = basename(dirname(libDir)) === "dist" ? join(libDir, "..", "..") : join(libDir, "..");
const committedDir = join(benchDir, "results");

export interface ReportOptions {
  /** A `--quick` run: reduced sizes, whose numbers must never replace the reported ones. */
  quick: boolean;
}

/**
 * Where a run writes its files: `bench/results/` (committed; docs/benchmarks.md
 * reports it) for a full run, `bench/results/quick/` (gitignored) for `--quick`.
 */
export function resultsDirectory(options: ReportOptions): string {
  return options.quick ? join(committedDir, "quick") : committedDir;
}

/** Prints the table and writes `<resultsDirectory>/<bench>.json` in the one shape every benchmark shares. */
export function writeReport(
  bench: string,
  config: Record<string, unknown>,
  results: BenchResult[],
  options: ReportOptions,
): BenchReport {
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
  const dir = resultsDirectory(options);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${bench}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`wrote ${file}${options.quick ? " (--quick: a scratch copy; the committed results are untouched)" : ""}`);
  return report;
}
