import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { describeBenchmark, formatBenchmarkList, listBenchmarks, parseBenchArgs } from "./bench-args.mjs";

const names = ["frontend", "routing"];

describe("bench args", () => {
  it("bench args - no name or a help flag lists the benchmarks", () => {
    expect(parseBenchArgs([], names)).toEqual({ kind: "list" });
    expect(parseBenchArgs(["--help"], names)).toEqual({ kind: "list" });
    expect(parseBenchArgs(["-h"], names)).toEqual({ kind: "list" });
  });

  it("bench args - a known name runs it with the remaining arguments", () => {
    expect(parseBenchArgs(["routing", "--quick", "--workload", "prefix"], names)).toEqual({
      kind: "run",
      name: "routing",
      args: ["--quick", "--workload", "prefix"],
    });
  });

  it("bench args - an unknown name is a usage error", () => {
    expect(parseBenchArgs(["nope", "--quick"], names).kind).toBe("usage-error");
  });

  it("bench args - a flag before the name is a usage error, not a benchmark called --quick", () => {
    expect(parseBenchArgs(["--quick", "frontend"], names).kind).toBe("usage-error");
  });

  it("bench args - the description is the header's first sentence on one line, with its flags", () => {
    const source = [
      "/**",
      " * bench/demo: how long a thing takes (measured twice) against a plain",
      " * loop, in the same run, on the same machine, with the same inputs and the same warm-up, at 1 and 8 clients.",
      " *",
      " *   npm run bench -- demo [--quick] [--size N]",
      " */",
      'import { x } from "y";',
    ].join("\n");
    const benchmark = describeBenchmark("demo", source);
    expect(benchmark.flags).toBe("[--quick] [--size N]");
    expect(benchmark.description.startsWith("how long a thing takes against a plain loop, in the same run")).toBe(true);
    expect(benchmark.description.length).toBeLessThanOrEqual(120);
    expect(benchmark.description).not.toContain("\n");
  });

  it("bench args - lists the directories that hold a main.ts, sorted", () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-args-"));
    try {
      for (const name of ["zeta", "alpha"]) {
        mkdirSync(join(dir, name));
        writeFileSync(join(dir, name, "main.ts"), `/**\n * bench/${name}: measures ${name}.\n */\n`);
      }
      mkdirSync(join(dir, "lib"));
      writeFileSync(join(dir, "lib", "stats.ts"), "export {};\n");
      const listed = listBenchmarks(dir);
      expect(listed.map((b) => b.name)).toEqual(["alpha", "zeta"]);
      expect(listed[0]?.description).toBe("measures alpha");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("bench args - every benchmark in bench/ has a description", () => {
    const listed = listBenchmarks(fileURLToPath(new URL("../bench/", import.meta.url)));
    expect(listed.length).toBeGreaterThan(0);
    for (const benchmark of listed) expect(benchmark.description, benchmark.name).not.toBe("");
    expect(formatBenchmarkList(listed).split("\n").length).toBeGreaterThan(listed.length);
  });
});
