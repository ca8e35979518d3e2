import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const cliDir = fileURLToPath(new URL("../", import.meta.url));
const wrapper = join(cliDir, "bin", "tdist.js");

function runNode(script: string, args: string[]) {
  return spawnSync(process.execPath, [script, ...args], { encoding: "utf8", timeout: 20_000 });
}

describe("tdist bin", () => {
  it("tdist bin - the linked command is a committed file, not a build output npm links before it exists", () => {
    const manifest = JSON.parse(readFileSync(join(cliDir, "package.json"), "utf8")) as { bin: Record<string, string> };
    expect(manifest.bin.tdist).toBe("./bin/tdist.js");
    expect(readFileSync(wrapper, "utf8").startsWith("#!/usr/bin/env node\n")).toBe(true);
  });

  it("tdist bin - runs the built CLI with its arguments", () => {
    const result = runNode(wrapper, ["--help"]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("tdist");
  });

  it("tdist bin - without a build it says to build and exits 1 instead of a module-not-found stack", () => {
    const dir = mkdtempSync(join(tmpdir(), "tdist-bin-"));
    try {
      mkdirSync(join(dir, "bin"));
      copyFileSync(wrapper, join(dir, "bin", "tdist.js"));
      writeFileSync(join(dir, "package.json"), '{ "type": "module" }\n');
      const result = runNode(join(dir, "bin", "tdist.js"), ["--help"]);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain("npm run build");
      expect(result.stderr).not.toContain("ERR_MODULE_NOT_FOUND");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
