import { fileURLToPath } from "node:url";
import { ManagedProcess, type ProcessExit } from "./managed-process.js";
import { TestkitError } from "./testkit-error.js";

/** The repository root (tests spawn built entry points relative to it). */
export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

export interface NodeProcessOptions {
  name: string;
  /** Script path, absolute or relative to the repository root. */
  script: string;
  args?: readonly string[];
  env?: NodeJS.ProcessEnv;
}

/**
 * A Node.js child process for multi-process tests (a server, a worker, a
 * frontend), with its output kept for assertions and cleaned up when the test
 * process exits.
 */
export class NodeProcess implements AsyncDisposable {
  private readonly process: ManagedProcess;

  constructor(readonly options: NodeProcessOptions) {
    const script = options.script.startsWith("/") ? options.script : `${repoRoot}${options.script}`;
    this.process = new ManagedProcess({
      name: options.name,
      command: process.execPath,
      args: [script, ...(options.args ?? [])],
      env: { ...process.env, ...options.env },
    });
  }

  get output(): string {
    return this.process.output;
  }

  get running(): boolean {
    return this.process.running;
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  /** Waits until a line of output matches; returns the match. Fails early if the process exits. */
  async waitForOutput(pattern: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.process.output.match(pattern);
      if (match) return match;
      if (!this.process.running) {
        throw new TestkitError(
          "server_start_failed",
          `${this.options.name} exited (${this.process.describeExit()}) before printing ${pattern}:\n${this.process.output.slice(-4000)}`,
        );
      }
      if (Date.now() > deadline) {
        throw new TestkitError(
          "server_start_failed",
          `${this.options.name} did not print ${pattern} within ${timeoutMs} ms:\n${this.process.output.slice(-4000)}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Resolves with how the process ended (waits up to `timeoutMs`). */
  async exited(timeoutMs = 15_000): Promise<ProcessExit> {
    const deadline = Date.now() + timeoutMs;
    while (this.process.running) {
      if (Date.now() > deadline)
        throw new TestkitError("server_start_failed", `${this.options.name} did not exit in ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return this.process.exitStatus as ProcessExit;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  terminate(graceMs = 10_000): Promise<ProcessExit> {
    return this.process.terminate(graceMs);
  }

  /** Sends SIGTERM without waiting. */
  signal(signal: NodeJS.Signals): void {
    if (this.process.pid !== undefined) process.kill(this.process.pid, signal);
  }

  kill(): Promise<ProcessExit> {
    return this.process.kill();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.process.running) await this.process.kill();
  }
}
