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

  it("run command - --prefill-workers 1 --decode-workers 1 prefills long prompts on the prefill worker", async () => {
    const io = new CaptureIo();
    const done = runCli(
      [
        "run",
        "--engine",
        "mocker",
        "--speedup",
        "100",
        "--port",
        "0",
        "--prefill-workers",
        "1",
        "--decode-workers",
        "1",
        "--disagg-min-uncached-tokens",
        "16",
      ],
      io,
      { logger: silentLogger, serve: { signals: [STOP], forceExit: () => {} } },
    );
    await bannerLine(io);
    const out = io.stdout.join("\n");
    expect(out).toContain("1 prefill + 1 decode worker(s)");
    const url = /OpenAI API at (http:\/\/[^\s]+)\/v1/.exec(out)?.[1] as string;
    const prefillWorker = /worker: +([0-9a-f]+) \(prefill\)/.exec(out)?.[1];
    const decodeWorker = /worker: +([0-9a-f]+) \(decode\)/.exec(out)?.[1];
    const complete = (prompt: string) =>
      fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "mocker", prompt, max_tokens: 5 }),
        signal: AbortSignal.timeout(10_000),
      });
    const long = await complete("a long prompt about the weather in many cities ".repeat(8));
    expect(long.status).toBe(200);
    expect(long.headers.get("x-tdist-prefill-worker")).toBe(prefillWorker);
    expect(long.headers.get("x-tdist-worker")).toBe(decodeWorker);
    expect(((await long.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(5);
    const short = await complete("hi");
    expect(short.headers.get("x-tdist-prefill-worker")).toBeNull();
    await short.text();
    const metrics = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    expect(metrics).toContain('dynamo_frontend_disagg_decisions_total{model="mocker",outcome="remote"} 1');
    expect(metrics).toContain('dynamo_frontend_disagg_decisions_total{model="mocker",outcome="local"} 1');
    expect(metrics).toMatch(/dynamo_frontend_disagg_kv_transfer_bytes_total\{model="mocker"\} [1-9]/);
    process.emit(STOP, STOP);
    expect(await withTimeout("stopped", 20_000, undefined, () => done)).toBe(0);
  }, 30_000);
});
