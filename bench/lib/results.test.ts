import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { result, resultsDirectory, writeReport } from "./results.js";

const committedDir = fileURLToPath(new URL("../results/", import.meta.url));
const bench = `results-test-${process.pid}`;

afterEach(() => {
  rmSync(join(resultsDirectory({ quick: true }), `${bench}.json`), { force: true });
  rmSync(join(committedDir, `${bench}.json`), { force: true });
});

describe("bench results", () => {
  it("bench results - a --quick report goes to the scratch directory, never beside the committed results", () => {
    const rows = [result("ops_per_s", "fast", 200, "ops/s", "slow", 100, "ratio > 1")];
    writeReport(bench, { size: "quick" }, rows, { quick: true });
    const scratch = join(resultsDirectory({ quick: true }), `${bench}.json`);
    expect(existsSync(join(committedDir, `${bench}.json`))).toBe(false);
    expect(JSON.parse(readFileSync(scratch, "utf8")).results[0].ratio).toBe(2);
  });

  it("bench results - the scratch directory is gitignored", () => {
    const scratch = resultsDirectory({ quick: true });
    expect(scratch.startsWith(committedDir)).toBe(true);
    const ignored = readFileSync(fileURLToPath(new URL("../../.gitignore", import.meta.url)), "utf8").split("\n");
    expect(ignored).toContain(`bench/results/${scratch.slice(committedDir.length)}/`);
  });

  it("bench results - a full report goes to bench/results/", () => {
    expect(join(resultsDirectory({ quick: false }), "/")).toBe(committedDir);
  });
});
