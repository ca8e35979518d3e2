import { silentLogger } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { runCli } from "../cli.js";
import { CaptureIo } from "../testing/capture-io.js";

/** Runs the CLI in-process; every case here fails or finishes before anything serves. */
async function cli(args: string[]): Promise<{ code: number; io: CaptureIo }> {
  const io = new CaptureIo();
  const code = await runCli(args, io, { logger: silentLogger, serve: { signals: [], forceExit: () => {} } });
  return { code, io };
}

describe("disaggregation flags", () => {
  for (const command of ["run", "frontend"]) {
    it(`disaggregation flags - ${command} --help shows both knobs with their defaults`, async () => {
      const { code, io } = await cli([command, "--help"]);
      expect(code).toBe(0);
      const help = io.stdout.join("\n").replace(/\s+/g, " ");
      expect(help).toMatch(/--disagg-min-uncached-tokens <n> .*\(default: 512\)/);
      expect(help).toMatch(/--disagg-prefill-busy-tokens <n> .*\(default: 8192\)/);
    });
  }

  it("disaggregation flags - worker --help shows --mode with its choices and default", async () => {
    const { io } = await cli(["worker", "--help"]);
    const help = io.stdout.join("\n").replace(/\s+/g, " ");
    expect(help).toMatch(/--mode <role> .*\(choices: "aggregated", "prefill", "decode", default: "aggregated"\)/);
  });

  const refused: [string, string[], RegExp][] = [
    [
      "prefill workers without decode workers",
      ["run", "--engine", "mocker", "--prefill-workers", "1"],
      /--prefill-workers needs --decode-workers/,
    ],
    [
      "--workers with --decode-workers",
      ["run", "--engine", "mocker", "--workers", "2", "--decode-workers", "1"],
      /--workers counts aggregated workers/,
    ],
    [
      "decode workers of the echo engine",
      ["run", "--engine", "echo", "--decode-workers", "1"],
      /echo engine serves aggregated only/,
    ],
    [
      "an echo prefill worker",
      ["worker", "--discovery", "etcd", "--engine", "echo", "--mode", "prefill"],
      /echo engine serves aggregated only/,
    ],
    ["an unknown mode", ["worker", "--discovery", "etcd", "--mode", "both"], /--mode/],
    [
      "--kv-transfer-gbps for llama.cpp",
      ["run", "--engine", "llamacpp", "--kv-transfer-gbps", "10"],
      /--kv-transfer-gbps applies to --engine mocker/,
    ],
    [
      "a negative threshold",
      ["run", "--engine", "mocker", "--disagg-min-uncached-tokens", "-1"],
      /--disagg-min-uncached-tokens/,
    ],
  ];
  for (const [what, args, message] of refused) {
    it(`disaggregation flags - ${what} is refused before anything starts`, async () => {
      const { code, io } = await cli(args);
      expect(code).toBe(2);
      expect(io.stderr.join("\n")).toMatch(message);
    });
  }
});
