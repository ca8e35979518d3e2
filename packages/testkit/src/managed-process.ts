import { type ChildProcess, spawn } from "node:child_process";

/** How a process ended. `error` is set when it could not be spawned at all. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

export interface ManagedProcessOptions {
  /** Short name used in messages, e.g. "etcd". */
  name: string;
  /** Path of the executable. */
  command: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  /**
   * A directory the watchdog removes if this Node process dies while the
   * child still runs (the owner removes it in the normal case).
   */
  orphanCleanupDir?: string;
  /** How much of the combined stdout/stderr to keep, in characters. Default 64 KiB. */
  outputLimitChars?: number;
}

const liveProcesses = new Set<ManagedProcess>();
let exitHookInstalled = false;

/**
 * Kills every child still running when this process exits normally
 * (`process.exit`, end of the event loop). Deaths by signal are covered by
 * each child's watchdog.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const managed of liveProcesses) managed.killSync();
  });
}

/*
 * The watchdog is a shell that blocks reading a pipe from this process. When
 * this process dies in any way (SIGKILL included) the pipe closes, `read`
 * sees end-of-file, and the shell kills the server and removes its data
 * directory. A deliberate stop first kills the watchdog, so it never acts.
 */
export const watchdogScript = 'while read -r _; do :; done; kill -KILL "$0" 2>/dev/null; [ -n "$1" ] && rm -rf "$1"';

/**
 * A child process that is always cleaned up: tracked in a process-wide set,
 * SIGKILLed on process exit, and guarded by a watchdog against this process
 * being killed. Keeps the tail of its output for error messages. It does not
 * hold the event loop open.
 */
export class ManagedProcess {
  readonly name: string;
  /** Resolves once the process has exited (or failed to spawn); never rejects. */
  readonly exited: Promise<ProcessExit>;
  private readonly child: ChildProcess;
  private readonly watchdog: ChildProcess | undefined;
  private readonly outputLimit: number;
  private outputText = "";
  private exitInfo: ProcessExit | undefined;

  constructor(options: ManagedProcessOptions) {
    installExitHook();
    this.name = options.name;
    this.outputLimit = options.outputLimitChars ?? 64 * 1024;
    this.child = spawn(options.command, [...options.args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: options.env ?? process.env,
    });
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => resolve(this.markExited({ code, signal })));
      this.child.once("error", (error) => {
        // "error" without a pid means the spawn itself failed and "exit" will not follow.
        if (this.child.pid === undefined) resolve(this.markExited({ code: null, signal: null, error }));
        else this.appendOutput(`[${this.name}: ${error.message}]\n`);
      });
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => this.appendOutput(chunk));
      (stream as { unref?: () => void } | null)?.unref?.();
    }
    this.child.unref();
    if (this.child.pid !== undefined) {
      liveProcesses.add(this);
      this.watchdog = spawn("/bin/sh", ["-c", watchdogScript, String(this.child.pid), options.orphanCleanupDir ?? ""], {
        stdio: ["pipe", "ignore", "ignore"],
        detached: true,
      });
      this.watchdog.on("error", () => {});
      this.watchdog.unref();
      (this.watchdog.stdin as { unref?: () => void } | null)?.unref?.();
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** The kept tail of the combined stdout and stderr. */
  get output(): string {
    return this.outputText;
  }

  get exitStatus(): ProcessExit | undefined {
    return this.exitInfo;
  }

  /** Sends SIGTERM, waits up to `graceMs`, then SIGKILLs; resolves when the process is gone. */
  async terminate(graceMs: number): Promise<ProcessExit> {
    if (this.exitInfo) return this.exitInfo;
    this.child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), graceMs);
    });
    const first = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (first !== "timeout") return first;
    return this.kill();
  }

  /** Sends SIGKILL and resolves when the process is gone. */
  async kill(): Promise<ProcessExit> {
    if (this.exitInfo) return this.exitInfo;
    this.child.kill("SIGKILL");
    return this.exited;
  }

  /** Synchronous SIGKILL for the process exit hook. */
  killSync(): void {
    if (this.exitInfo || this.child.pid === undefined) return;
    try {
      process.kill(this.child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }

  /** A human-readable description of the exit, for error messages. */
  describeExit(): string {
    const info = this.exitInfo;
    if (!info) return `${this.name} is running`;
    if (info.error) return `${this.name} could not be started: ${info.error.message}`;
    return info.signal ? `${this.name} was killed by ${info.signal}` : `${this.name} exited with code ${info.code}`;
  }

  private markExited(info: ProcessExit): ProcessExit {
    this.exitInfo = info;
    liveProcesses.delete(this);
    this.disarmWatchdog();
    return info;
  }

  private disarmWatchdog(): void {
    const watchdog = this.watchdog;
    if (!watchdog || watchdog.exitCode !== null || watchdog.signalCode !== null) return;
    // Close the pipe only after the shell is dead: end-of-file would make it act.
    watchdog.once("exit", () => watchdog.stdin?.destroy());
    watchdog.kill("SIGKILL");
  }

  private appendOutput(chunk: string): void {
    this.outputText += chunk;
    if (this.outputText.length > this.outputLimit) {
      this.outputText = this.outputText.slice(this.outputText.length - this.outputLimit);
    }
  }
}

/** Number of children started by this module that are still running (for tests). */
export function liveProcessCount(): number {
  return liveProcesses.size;
}
