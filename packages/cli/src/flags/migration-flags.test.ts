import { silentLogger } from "@tdist/runtime";
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { runCli } from "../cli.js";
import { CaptureIo } from "../testing/capture-io.js";
import { addFrontendOptions, type FrontendFlagValues, frontendSettings } from "./frontend-flags.js";
import { addWorkerOptions, type WorkerFlagValues, workerSpec } from "./worker-flags.js";

function parsed<T>(add: (command: Command) => Command, args: string[]): { command: Command; values: T } {
  const command = add(new Command("test").exitOverride().configureOutput({ writeErr: () => {} }));
  command.parse(args, { from: "user" });
  return { command, values: command.opts() as T };
}

describe("migration flags", () => {
  it("migration flags - the worker's --migration-limit goes into its spec (for the card), absent when not given", () => {
    const given = parsed<WorkerFlagValues>(addWorkerOptions, ["--engine", "mocker", "--migration-limit", "0"]);
    expect(workerSpec(given.command, given.values, "ns").migrationLimit).toBe(0);
    const absent = parsed<WorkerFlagValues>(addWorkerOptions, ["--engine", "mocker"]);
    expect(workerSpec(absent.command, absent.values, "ns").migrationLimit).toBeUndefined();
  });

  it("migration flags - the frontend's --migration-limit overrides, and a bad value is refused", () => {
    const given = parsed<FrontendFlagValues>((c) => addFrontendOptions(c, "127.0.0.1"), ["--migration-limit", "5"]);
    expect(frontendSettings(given.values).migrationLimit).toBe(5);
    const absent = parsed<FrontendFlagValues>((c) => addFrontendOptions(c, "127.0.0.1"), []);
    expect(frontendSettings(absent.values)).not.toHaveProperty("migrationLimit");
    expect(() => parsed((c) => addFrontendOptions(c, "127.0.0.1"), ["--migration-limit", "-1"])).toThrow();
  });

  it("migration flags - run has one --migration-limit (the frontend's), worker and frontend have theirs", async () => {
    for (const command of ["run", "worker", "frontend"]) {
      const io = new CaptureIo();
      const code = await runCli([command, "--help"], io, {
        logger: silentLogger,
        serve: { signals: [], forceExit: () => {} },
      });
      expect(code).toBe(0);
      expect(io.stdout.join("\n").match(/--migration-limit <n>/g)).toHaveLength(1);
    }
  });
});
