import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { delay, withTimeout } from "@tdist/runtime";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { tinyModelPath } from "./testing/llamacpp-fixtures.js";
import { llamaCppWorkerEntry } from "./worker-entry.js";

const PARENT_SCRIPT = fileURLToPath(new URL("./testing/engine-parent-process.ts", import.meta.url));
const START_BOUND_MS = 60_000;

interface ParentMessage {
  type: string;
  childPid?: number;
  finishReason?: string;
  tokens?: number;
  maxTokens?: number;
  error?: string;
}

/** A process that owns an engine, in its own process group as a terminal's foreground job is. */
class EngineParent {
  readonly process: ChildProcess;
  readonly messages: ParentMessage[] = [];
  stderr = "";
  #waiters: (() => void)[] = [];

  constructor(modelPath: string) {
    this.process = spawn(process.execPath, [...llamaCppWorkerEntry().execArgv, PARENT_SCRIPT, modelPath], {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let partial = "";
    this.process.stdout?.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) if (line.trim() !== "") this.messages.push(JSON.parse(line) as ParentMessage);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.process.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
    });
    this.process.on("exit", () => {
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  get pid(): number {
    return this.process.pid as number;
  }

  /** The first message of this type, waiting (bounded) for it. */
  message(type: string, timeoutMs: number): Promise<ParentMessage> {
    return withTimeout(`the parent's ${type} message`, timeoutMs, undefined, async () => {
      for (;;) {
        const found = this.messages.find((message) => message.type === type);
        if (found !== undefined) return found;
        if (this.process.exitCode !== null || this.process.signalCode !== null) {
          throw new Error(`the parent exited before '${type}': ${this.stderr.slice(-2000)}`);
        }
        await new Promise<void>((resolve) => this.#waiters.push(resolve));
      }
    });
  }

  exited(timeoutMs: number): Promise<number | null> {
    return withTimeout("the parent's exit", timeoutMs, undefined, async () => {
      if (this.process.exitCode !== null || this.process.signalCode !== null) return this.process.exitCode;
      return new Promise<number | null>((resolve) => this.process.once("exit", (code) => resolve(code)));
    });
  }
}

/** Whether the process runs: it exists and is not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function kill(pid: number | undefined, signal: NodeJS.Signals): void {
  try {
    if (pid !== undefined) process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

let modelPath: string;
const started: { parent: EngineParent; childPid?: number }[] = [];

beforeAll(async () => {
  modelPath = await tinyModelPath();
}, 120_000);

afterEach(() => {
  for (const { parent, childPid } of started.splice(0)) {
    kill(-parent.pid, "SIGKILL");
    kill(childPid, "SIGKILL");
  }
});

function startParent(): EngineParent {
  const parent = new EngineParent(modelPath);
  started.push({ parent });
  return parent;
}

describe("llamacpp child signals", () => {
  it("llamacpp child signals - SIGINT to the terminal's process group reaches the parent, not the engine child", async () => {
    const parent = startParent();
    const ready = await parent.message("ready", START_BOUND_MS);
    const childPid = ready.childPid as number;
    (started.at(-1) as { childPid?: number }).childPid = childPid;
    await parent.message("streaming", 20_000);
    // What Ctrl-C does: SIGINT to every process of the foreground process group.
    process.kill(-parent.pid, "SIGINT");
    await parent.message("sigint", 10_000);
    const done = await parent.message("done", 20_000);
    // The parent drained the stream: the child served it to the end instead of dying with it.
    expect(done.error).toBeUndefined();
    expect(done.finishReason).toBe("length");
    expect(done.tokens).toBe(done.maxTokens);
    expect(await parent.exited(20_000)).toBe(0);
  });

  it("llamacpp child signals - a SIGKILLed parent's engine child exits within two seconds", async () => {
    const parent = startParent();
    const ready = await parent.message("ready", START_BOUND_MS);
    const childPid = ready.childPid as number;
    (started.at(-1) as { childPid?: number }).childPid = childPid;
    await parent.message("streaming", 20_000);
    expect(running(childPid)).toBe(true);
    process.kill(parent.pid, "SIGKILL");
    await parent.exited(5_000);
    const killedAt = Date.now();
    await withTimeout("the orphaned child's exit", 2_000, undefined, async () => {
      while (running(childPid)) await delay(20);
    });
    expect(Date.now() - killedAt).toBeLessThan(2_000);
  });
});
