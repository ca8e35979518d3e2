import { mkdir, rm } from "node:fs/promises";
import { findExecutable } from "./find-executable.js";
import { ManagedProcess } from "./managed-process.js";
import { TestkitError } from "./testkit-error.js";

/** What one kind of server (etcd, nats-server) needs to be run by {@link ServerProcess}. */
export interface ServerSpec {
  /** Short name for messages, e.g. "etcd". */
  name: string;
  /** Executable name or path. */
  binary: string;
  /** Debian package that provides the binary, named in the "not installed" error. */
  debianPackage: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** Holds the server's data; kept across restarts, removed by `stop()`. */
  dataDir: string;
  startTimeoutMs: number;
  stopTimeoutMs: number;
  /** True once the given process serves requests; polled every 50 ms while starting. Must be bounded in time. */
  isReady(process: ManagedProcess): Promise<boolean>;
}

const readyPollMs = 50;
const outputTailChars = 4_000;

/** Resolves `name` to an executable or throws `server_not_installed` naming the Debian package. */
export function requireExecutable(name: string, debianPackage: string): string {
  const path = findExecutable(name);
  if (path === undefined) {
    throw new TestkitError(
      "server_not_installed",
      `${name} is not installed (not found on PATH or in /usr/sbin, /usr/bin). ` +
        `Install it with: apt-get install ${debianPackage}`,
    );
  }
  return path;
}

/** True when a failed start was caused by a port another process took first. */
export function isAddressInUse(error: unknown): boolean {
  return error instanceof TestkitError && /address already in use|EADDRINUSE/i.test(error.message);
}

/**
 * The lifecycle shared by the test servers: start and wait until ready,
 * terminate, kill (crash), restart on the same ports and data, and a final
 * stop that removes the data directory.
 */
export class ServerProcess {
  private current: ManagedProcess | undefined;
  private stopped = false;
  private readonly command: string;

  constructor(private readonly spec: ServerSpec) {
    this.command = requireExecutable(spec.binary, spec.debianPackage);
  }

  get pid(): number | undefined {
    return this.current?.running ? this.current.pid : undefined;
  }

  get running(): boolean {
    return this.current?.running ?? false;
  }

  /** The output of the current (or last) server process. */
  get output(): string {
    return this.current?.output ?? "";
  }

  async start(): Promise<void> {
    if (this.stopped) throw new TestkitError("server_stopped", `${this.spec.name} was stopped and cannot be restarted`);
    if (this.running) return;
    await mkdir(this.spec.dataDir, { recursive: true });
    const managed = new ManagedProcess({
      name: this.spec.name,
      command: this.command,
      args: this.spec.args,
      env: this.spec.env,
      orphanCleanupDir: this.spec.dataDir,
    });
    this.current = managed;
    const deadline = Date.now() + this.spec.startTimeoutMs;
    for (;;) {
      if (!managed.running) {
        throw this.startError(`${managed.describeExit()} before it was ready`, managed);
      }
      let ready = false;
      try {
        ready = await this.spec.isReady(managed);
      } catch {
        ready = false;
      }
      if (ready && managed.running) return;
      if (Date.now() >= deadline) {
        await managed.kill();
        throw this.startError(`${this.spec.name} was not ready within ${this.spec.startTimeoutMs} ms`, managed);
      }
      await Promise.race([managed.exited, sleep(readyPollMs)]);
    }
  }

  /** SIGTERM, waiting for the exit (SIGKILL after the stop timeout). Keeps the data. */
  async terminate(): Promise<void> {
    await this.current?.terminate(this.spec.stopTimeoutMs);
  }

  /** SIGKILL, as a crash would. Keeps the data. */
  async kill(): Promise<void> {
    await this.current?.kill();
  }

  async restart(options?: { wipeData?: boolean }): Promise<void> {
    if (this.stopped) throw new TestkitError("server_stopped", `${this.spec.name} was stopped and cannot be restarted`);
    await this.terminate();
    if (options?.wipeData) await rm(this.spec.dataDir, { recursive: true, force: true });
    await this.start();
  }

  /** Stops for good and removes the data directory. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.terminate();
    await rm(this.spec.dataDir, { recursive: true, force: true, maxRetries: 3 });
  }

  private startError(reason: string, managed: ManagedProcess): TestkitError {
    const tail = managed.output.slice(-outputTailChars).trimEnd();
    return new TestkitError(
      "server_start_failed",
      `${reason}.\n--- ${this.spec.name} output (last ${outputTailChars} chars) ---\n${tail || "(no output)"}`,
    );
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** What every testkit server offers, whatever it is (etcd, nats-server). */
export interface ServerHandle extends AsyncDisposable {
  /** Pid of the running server; undefined while it is down. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** The kept tail of the server's log (of the current or last run). */
  output(): string;
  /** SIGTERM, wait for exit, remove the data directory. Final: no restart after it. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would; the data directory stays, so `restart()` can follow. */
  kill(): Promise<void>;
  /** Stops the server if it runs and starts it again on the same ports and data, waiting until ready. */
  restart(options?: { wipeData?: boolean }): Promise<void>;
}

/** A {@link ServerHandle} over a started server, with `extra` (its address and directories) added. */
export function serverHandle<T extends object>(server: ServerProcess, extra: T): ServerHandle & T {
  const handle: ServerHandle = {
    get pid() {
      return server.pid;
    },
    get running() {
      return server.running;
    },
    output: () => server.output,
    stop: () => server.stop(),
    kill: () => server.kill(),
    restart: (options) => server.restart(options),
    [Symbol.asyncDispose]: () => server.stop(),
  };
  // Object.assign keeps the handle's getters (spreading would freeze their values).
  return Object.assign(handle, extra);
}
