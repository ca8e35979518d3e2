import { delay, silentLogger, withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { runCli } from "../cli.js";
import { CaptureIo } from "../testing/capture-io.js";

/** Stands in for Ctrl-C, so the test runner itself is not signalled. */
const STOP = "SIGUSR2" as const;

function startRun(args: string[]): { io: CaptureIo; done: Promise<number> } {
  const io = new CaptureIo();
  const done = runCli(["run", "--engine", "echo", "--port", "0", ...args], io, {
    logger: silentLogger,
    serve: { signals: [STOP], forceExit: () => {} },
  });
  return { io, done };
}

function bannerLine(io: CaptureIo): Promise<string> {
  return withTimeout("banner", 20_000, undefined, async () => {
    for (;;) {
      const line = io.stdout.find((text) => text.includes("listening:"));
      if (line) return line;
      await delay(20);
    }
  });
}

describe("run command - in process", () => {
  it("run command - binds 127.0.0.1 by default, prints the bound address, and stops on the signal", async () => {
    const { io, done } = startRun([]);
    const banner = await bannerLine(io);
    expect(banner).toMatch(/listening: 127\.0\.0\.1:\d+$/);
    const url = /OpenAI API at (http:\/\/[^\s]+)\/v1/.exec(io.stdout.join("\n"))?.[1];
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const models = await fetch(`${url}/v1/models`, { signal: AbortSignal.timeout(5_000) });
    expect(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toEqual(["echo"]);
    process.emit(STOP, STOP);
    expect(await withTimeout("stopped", 20_000, undefined, () => done)).toBe(0);
    expect(io.stderr.join("\n")).toContain("shutting down: no requests in flight");
  }, 30_000);

  it("run command - --host 0.0.0.0 binds every interface and says so", async () => {
    const { io, done } = startRun(["--host", "0.0.0.0"]);
    const banner = await bannerLine(io);
    expect(banner).toMatch(/listening: 0\.0\.0\.0:\d+ \(every interface\)$/);
    process.emit(STOP, STOP);
    expect(await withTimeout("stopped", 20_000, undefined, () => done)).toBe(0);
  }, 30_000);
});
