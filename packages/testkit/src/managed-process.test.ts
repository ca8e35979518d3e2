import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ManagedProcess, watchdogScript } from "./managed-process.js";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("managed process", () => {
  it("managed process - terminate sends SIGTERM and resolves on exit", async () => {
    const managed = new ManagedProcess({ name: "sleep", command: "/bin/sleep", args: ["30"] });
    expect(managed.running).toBe(true);
    const exit = await managed.terminate(5_000);
    expect(exit.signal).toBe("SIGTERM");
    expect(managed.running).toBe(false);
  });

  it("managed process - terminate escalates to SIGKILL after the grace period", async () => {
    const managed = new ManagedProcess({
      name: "stubborn",
      command: "/bin/sh",
      args: ["-c", "trap '' TERM; echo armed; while :; do sleep 0.05; done"],
    });
    await waitFor("trap armed", () => managed.output.includes("armed"), 5_000);
    const exit = await managed.terminate(200);
    expect(exit.signal).toBe("SIGKILL");
  });

  it("managed process - keeps the tail of the output", async () => {
    const managed = new ManagedProcess({
      name: "chatty",
      command: "/bin/sh",
      args: ["-c", "echo out; echo err 1>&2"],
      outputLimitChars: 64,
    });
    const exit = await managed.exited;
    expect(exit.code).toBe(0);
    expect(managed.output).toContain("out");
    expect(managed.output).toContain("err");
  });

  it("managed process - the watchdog kills the child and removes its dir when the parent dies", async () => {
    const dir = await mkdtemp(join(tmpdir(), "tdist-watchdog-"));
    // A parent that starts `sleep` guarded by the watchdog, prints the pid, and is then SIGKILLed.
    const parentScript = `
      const { spawn } = require("node:child_process");
      const child = spawn("/bin/sleep", ["30"], { stdio: "ignore" });
      spawn("/bin/sh", ["-c", process.env.WATCHDOG, String(child.pid), process.env.DIR], { stdio: ["pipe", "ignore", "ignore"], detached: true });
      console.log(child.pid);
      setInterval(() => {}, 1000);
    `;
    const parent = spawn(process.execPath, ["-e", parentScript], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, WATCHDOG: watchdogScript, DIR: dir },
    });
    let printed = "";
    parent.stdout.setEncoding("utf8");
    parent.stdout.on("data", (chunk: string) => {
      printed += chunk;
    });
    await waitFor("child pid printed", () => printed.includes("\n"), 5_000);
    const childPid = Number(printed.trim());
    expect(isAlive(childPid)).toBe(true);
    parent.kill("SIGKILL");
    await waitFor("orphaned child killed", () => !isAlive(childPid), 5_000);
    await waitFor("directory removed", () => !existsSync(dir), 5_000);
  });
});
