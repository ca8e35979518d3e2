import { delay, withTimeout } from "@tdist/runtime";
import { type EtcdServer, type NatsServer, NodeProcess, startEtcd, startNats } from "@tdist/testkit";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const CLI = "packages/cli/dist/main.js";

describe("cluster serving - frontend and workers as processes on etcd and NATS", () => {
  let etcd: EtcdServer;
  let nats: NatsServer;
  const processes: NodeProcess[] = [];

  const flags = () => ["--discovery", "etcd", "--etcd-endpoints", etcd.endpoint];
  const env = { TDIST_LEASE_TTL_MS: "2000", TDIST_LOG_LEVEL: "warn", TDIST_NAMESPACE: "cluster" };

  function spawnCli(name: string, args: string[]): NodeProcess {
    const child = new NodeProcess({ name, script: CLI, args, env });
    processes.push(child);
    return child;
  }

  beforeAll(async () => {
    [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
  });

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.terminate(5_000)));
    await Promise.all([etcd?.stop(), nats?.stop()]);
  });

  it("cluster serving - a worker process appears on a frontend process, serves the openai client, and disappears when it stops", async () => {
    const frontend = spawnCli("frontend", [
      "frontend",
      ...flags(),
      "--nats-url",
      nats.url,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
    ]);
    const [, url] = (await frontend.waitForOutput(/tdist frontend at (http:\/\/[^\s]+)\/v1/)) as RegExpMatchArray;
    const worker = spawnCli("worker", [
      "worker",
      ...flags(),
      "--engine",
      "echo",
      "--model-name",
      "cluster-echo",
      "--request-plane",
      "nats",
      "--nats-url",
      nats.url,
    ]);
    await worker.waitForOutput(/"event":"worker-ready"/);
    const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 10_000 });
    await withTimeout("model listed", 15_000, undefined, async () => {
      while (!(await openai.models.list()).data.some((m) => m.id === "cluster-echo")) await delay(100);
    });
    const completion = await openai.completions.create({ model: "cluster-echo", prompt: "across processes" });
    expect(completion.choices[0]?.text).toBe("across processes");
    const status = spawnCli("status", ["status", ...flags(), "--json"]);
    expect((await status.exited(15_000)).code).toBe(0);
    const parsed = JSON.parse(status.output.slice(status.output.indexOf("{"))) as {
      endpoints: { namespace: string; endpoint: string; instances: { transport: string }[] }[];
      models: { name: string }[];
    };
    expect(parsed.models.map((m) => m.name)).toContain("cluster-echo");
    const generate = parsed.endpoints.find((e) => e.namespace === "cluster" && e.endpoint === "generate");
    expect(generate?.instances[0]?.transport).toMatch(/^nats:\/\//);
    expect((await worker.terminate(10_000)).code).toBe(0);
    await withTimeout("model removed", 10_000, undefined, async () => {
      while ((await openai.models.list()).data.some((m) => m.id === "cluster-echo")) await delay(100);
    });
  });
});
