import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";

export interface TdistProcess {
  child: ChildProcess;
  pid: number;
  /** `http://host:port`, from the banner. */
  origin: string;
  /** The inspector's `ws://` address, when started with `inspect`. */
  inspectorUrl: string | undefined;
  stop: (timeoutMs: number) => Promise<void>;
}

/**
 * Starts the CLI (`node <main> ...args`) and resolves once it prints where
 * its OpenAI API listens. `inspect` opens the process's inspector on a free
 * loopback port, for a soak to ask it for a full GC.
 */
export async function startTdist(
  main: string,
  args: string[],
  options: { timeoutMs: number; inspect?: boolean },
): Promise<TdistProcess> {
  const { timeoutMs } = options;
  const nodeArgs = options.inspect === true ? ["--inspect=127.0.0.1:0"] : [];
  const child = spawn(process.execPath, [...nodeArgs, main, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TDIST_LOG_LEVEL: "warn" },
  });
  let output = "";
  const origin = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tdist did not start in ${timeoutMs} ms: ${output}`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const found = /OpenAI API at (http:\/\/[^\s]+)\/v1/.exec(output);
      if (found) {
        clearTimeout(timer);
        child.stdout?.off("data", onData);
        child.stderr?.off("data", onData);
        resolve(found[1] as string);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`tdist exited ${code} before it was ready: ${output}`));
    });
  });
  // Keep reading so a chatty server never blocks on a full pipe.
  child.stdout?.resume();
  child.stderr?.resume();
  const stop = async (stopTimeoutMs: number): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };
  const inspectorUrl = /Debugger listening on (ws:\/\/\S+)/.exec(output)?.[1];
  return { child, pid: child.pid as number, origin, inspectorUrl, stop };
}
