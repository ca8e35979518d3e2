// @ts-check
// What `npm run bench` was asked to do, decided before anything is built, so
// a typo fails in a second rather than after the build.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** @typedef {{ name: string, description: string, flags: string }} Benchmark */
/**
 * @typedef {{ kind: "list" }
 *   | { kind: "run", name: string, args: string[] }
 *   | { kind: "usage-error", reason: string }} BenchCommand
 */

const HELP_FLAGS = new Set(["--help", "-h", "--list"]);
const DESCRIPTION_MAX = 120;

/**
 * @param {string[]} argv the arguments after `npm run bench --`
 * @param {string[]} names the benchmarks that exist
 * @returns {BenchCommand}
 */
export function parseBenchArgs(argv, names) {
  const [name, ...args] = argv;
  if (name === undefined || HELP_FLAGS.has(name)) return { kind: "list" };
  if (name.startsWith("-")) return { kind: "usage-error", reason: `the benchmark's name comes first, before ${name}` };
  if (!names.includes(name)) return { kind: "usage-error", reason: `no benchmark named ${name}` };
  return { kind: "run", name, args };
}

/**
 * A benchmark's one-line description and flags, from the header comment of
 * its main.ts (`bench/<name>: <what it measures>.` and the usage line), so
 * the list cannot drift from the benchmarks themselves.
 * @param {string} name
 * @param {string} source the text of bench/<name>/main.ts
 * @returns {Benchmark}
 */
export function describeBenchmark(name, source) {
  const header = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source)?.[1] ?? "";
  const commentLines = header.split("\n").map((line) => line.replace(/^\s*\*\s?/, "").trim());
  const lines = commentLines.slice(
    Math.max(
      0,
      commentLines.findIndex((line) => line !== ""),
    ),
  );
  const usage = lines.find((line) => line.startsWith(`npm run bench -- ${name}`));
  const flags = usage === undefined ? "" : usage.slice(`npm run bench -- ${name}`.length).trim();
  const blank = lines.findIndex((line, i) => i > 0 && line === "");
  const paragraph = lines
    .slice(0, blank === -1 ? undefined : blank)
    .join(" ")
    .replace(new RegExp(`^bench/${name}:\\s*`), "");
  return { name, description: oneLine(firstSentence(paragraph)), flags };
}

/** @param {string} text */
function firstSentence(text) {
  const end = /\.(\s|$)/.exec(text);
  return (end === null ? text : text.slice(0, end.index)).trim();
}

/**
 * Parentheticals dropped, then cut at a clause (or word) boundary to fit a line.
 * @param {string} text
 */
function oneLine(text) {
  let line = text;
  for (let previous = ""; previous !== line; ) {
    previous = line;
    line = line.replace(/\s*\([^()]*\)/g, "");
  }
  line = line.replace(/\s+/g, " ").trim();
  if (line.length <= DESCRIPTION_MAX) return line;
  const clause = line.lastIndexOf(", ", DESCRIPTION_MAX);
  if (clause > DESCRIPTION_MAX / 2) return line.slice(0, clause);
  return `${line.slice(0, line.lastIndexOf(" ", DESCRIPTION_MAX - 1))}…`;
}

/**
 * Every `bench/<name>/main.ts`, sorted by name.
 * @param {string} benchDir
 * @returns {Benchmark[]}
 */
export function listBenchmarks(benchDir) {
  return readdirSync(benchDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(benchDir, entry.name, "main.ts")))
    .map((entry) => describeBenchmark(entry.name, readFileSync(join(benchDir, entry.name, "main.ts"), "utf8")))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * @param {Benchmark[]} benchmarks
 * @returns {string}
 */
export function formatBenchmarkList(benchmarks) {
  const width = Math.max(0, ...benchmarks.map((b) => b.name.length));
  const rows = benchmarks.map((b) => `  ${b.name.padEnd(width)}  ${b.description}${b.flags ? `  ${b.flags}` : ""}`);
  return [
    "usage: npm run bench -- <name> [--quick] [flags]",
    "  --quick runs reduced sizes in under a minute and writes to bench/results/quick/ (gitignored);",
    "  a full run writes bench/results/<name>.json, the numbers docs/benchmarks.md reports.",
    "",
    "benchmarks:",
    ...rows,
  ].join("\n");
}
