/**
 * A serving command that cannot start must exit non-zero, having stopped
 * whatever it started, so a supervisor (systemd, Kubernetes) sees the
 * failure and restarts it; and flags are checked before anything starts.
 */
import { createServer, type Server } from "node:net";
import { type EtcdServer, NodeProcess, startEtcd } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const CLI = "packages/cli/dist/main.js";
const ENV = { TDIST_LOG_LEVEL: "info", TDIST_LOG_FORMAT: "json" };

function occupyPort(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") reject(new Error("no port"));
      else resolve({ server, port: address.port });
    });
  });
}

describe("startup failures - serving commands as processes", () => {
  const processes: NodeProcess[] = [];
  let busy: { server: Server; port: number };
  let etcd: EtcdServer;

  const spawn = (name: string, args: string[]): NodeProcess => {
    const child = new NodeProcess({ name, script: CLI, args, env: ENV });
    processes.push(child);
    return child;
  };

  beforeAll(async () => {
    [busy, etcd] = await Promise.all([occupyPort(), startEtcd()]);
  });

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.terminate(5_000)));
    busy?.server.close();
    await etcd?.stop();
  });

  it("startup failures - tdist run on a port in use stops its worker and exits non-zero", async () => {
    const run = spawn("run-port-in-use", ["run", "--engine", "echo", "--port", String(busy.port)]);
    const exit = await run.exited(15_000);
    expect(exit.code).toBe(2);
    expect(run.output).toContain("the port is already in use");
    // The worker had started (its endpoints served) and was stopped again before the exit.
    expect(run.output).toContain("serving endpoint");
    expect(run.output).toContain("runtime stopped");
    // The frontend's model watch stopped with it, rather than retrying until the process was forced out.
    expect(run.output).not.toContain("cannot re-watch");
  }, 30_000);

  it("startup failures - tdist frontend on a port in use exits non-zero", async () => {
    const frontend = spawn("frontend-port-in-use", [
      "frontend",
      "--discovery",
      "etcd",
      "--etcd-endpoints",
      etcd.endpoint,
      "--port",
      String(busy.port),
    ]);
    const exit = await frontend.exited(15_000);
    expect(exit.code).toBe(2);
    expect(frontend.output).toContain("the port is already in use");
  }, 30_000);

  it("startup failures - a bad flag fails before any worker starts", async () => {
    for (const args of [
      ["run", "--engine", "echo", "--router-mode", "smart"],
      ["run", "--engine", "echo", "--port", "abc"],
    ]) {
      const run = spawn("run-bad-flag", args);
      const exit = await run.exited(15_000);
      expect(exit.code).toBe(2);
      expect(run.output).toContain("is invalid");
      expect(run.output).not.toContain("serving endpoint");
    }
  }, 30_000);
});
