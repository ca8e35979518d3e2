import { silentLogger, TdistError, withTimeout } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { CaptureIo } from "../testing/capture-io.js";
import { serveUntilSignal } from "./serve-until-signal.js";

/** SIGUSR2 stands in for Ctrl-C: process.emit reaches the listeners without signalling the test runner. */
const SIGNAL = "SIGUSR2" as const;

function options(io: CaptureIo, forced: number[] = []) {
  return { io, logger: silentLogger, signals: [SIGNAL], forceExit: (code: number) => forced.push(code) };
}

describe("serve lifecycle - startup failures and signals", () => {
  it("serve lifecycle - a startup failure stops what was started, last first, and returns non-zero", async () => {
    const io = new CaptureIo();
    const stopped: string[] = [];
    const code = await withTimeout("serve", 5_000, undefined, () =>
      serveUntilSignal(options(io), async (startup) => {
        startup.started("runtime", "r", async () => void stopped.push("runtime"));
        startup.started("worker", "w", async () => void stopped.push("worker"));
        throw new TdistError("invalid_option", "cannot listen on 127.0.0.1:8000: the port is already in use");
      }),
    );
    expect(code).toBe(2);
    expect(stopped).toEqual(["worker", "runtime"]);
    expect(io.stderr.join("\n")).toContain("invalid_option: cannot listen");
  });

  it("serve lifecycle - an unexpected startup error exits 1 and still undoes, even when one stop fails", async () => {
    const io = new CaptureIo();
    const stopped: string[] = [];
    const code = await serveUntilSignal(options(io), async (startup) => {
      startup.started("runtime", "r", async () => void stopped.push("runtime"));
      startup.started("engine", "e", async () => {
        throw new Error("engine close failed");
      });
      throw new Error("model file is corrupt");
    });
    expect(code).toBe(1);
    expect(stopped).toEqual(["runtime"]);
  });

  it("serve lifecycle - a signal stops the command gracefully, saying what shutdown waits for", async () => {
    const io = new CaptureIo();
    const stopped: string[] = [];
    let started!: () => void;
    const ready = new Promise<void>((resolve) => {
      started = resolve;
    });
    const serving = serveUntilSignal(options(io), async (startup) => {
      startup.started("frontend", "f", async () => void stopped.push("frontend"));
      started();
      return { shutdownWaitsFor: async () => "2 request(s) in flight get up to 10 s to finish" };
    });
    await withTimeout("started", 5_000, undefined, () => ready);
    await new Promise((resolve) => setImmediate(resolve));
    process.emit(SIGNAL, SIGNAL);
    expect(await withTimeout("stopped", 5_000, undefined, () => serving)).toBe(0);
    expect(stopped).toEqual(["frontend"]);
    expect(io.stderr.join("\n")).toContain("shutting down: 2 request(s) in flight get up to 10 s to finish");
    expect(io.stderr.join("\n")).toContain("Ctrl-C again to stop now");
    expect(process.listenerCount(SIGNAL)).toBe(0);
  });

  it("serve lifecycle - a second signal forces the exit while the first still drains", async () => {
    const io = new CaptureIo();
    const forced: number[] = [];
    let release!: () => void;
    const draining = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const ready = new Promise<void>((resolve) => {
      started = resolve;
    });
    const serving = serveUntilSignal(options(io, forced), async (startup) => {
      startup.started("frontend", "f", () => draining);
      started();
      return { shutdownWaitsFor: async () => "1 request(s) in flight" };
    });
    await withTimeout("started", 5_000, undefined, () => ready);
    await new Promise((resolve) => setImmediate(resolve));
    process.emit(SIGNAL, SIGNAL);
    await new Promise((resolve) => setTimeout(resolve, 20));
    process.emit(SIGNAL, SIGNAL);
    expect(forced).toEqual([130]);
    release();
    expect(await withTimeout("stopped", 5_000, undefined, () => serving)).toBe(0);
  });

  it("serve lifecycle - a signal during a slow startup stops at the next step and undoes the rest", async () => {
    const io = new CaptureIo();
    const stopped: string[] = [];
    const code = await withTimeout("serve", 5_000, undefined, () =>
      serveUntilSignal(options(io), async (startup) => {
        startup.started("runtime", "r", async () => void stopped.push("runtime"));
        process.emit(SIGNAL, SIGNAL); // arrives while "loading the model"
        await new Promise((resolve) => setTimeout(resolve, 10));
        startup.checkpoint();
        startup.started("worker", "w", async () => void stopped.push("worker"));
        return { shutdownWaitsFor: async () => "" };
      }),
    );
    expect(code).toBe(0);
    expect(stopped).toEqual(["runtime"]);
    expect(io.stderr.join("\n")).toContain("stopping while starting");
  });
});
