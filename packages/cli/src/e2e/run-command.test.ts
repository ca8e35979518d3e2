/**
 * `tdist run` and `tdist worker` as processes: they serve, and a Ctrl-C
 * (SIGINT) or SIGTERM stops them cleanly, the llama.cpp engine child included.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { childPids, type EtcdServer, NodeProcess, processAlive, startEtcd } from "@tdist/testkit";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { duplicatedKeys } from "../testing/json-keys.js";

const CLI = "packages/cli/dist/main.js";
/** Shared with the engine's own tests, so the tiny model is generated once per machine. */
const TEST_CACHE_DIR = process.env.TDIST_CACHE_DIR || join(tmpdir(), "tdist-test-cache");

describe("tdist run as a process", () => {
  const processes: NodeProcess[] = [];
  let etcd: EtcdServer;

  beforeAll(async () => {
    etcd = await startEtcd();
  });

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.terminate(5_000)));
    await etcd?.stop();
  });

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it(`run command - llama.cpp serves a completion, then ${signal} stops the process and its engine child`, async () => {
      const run = new NodeProcess({
        name: `run-${signal}`,
        script: CLI,
        args: ["run", "--engine", "llamacpp", "--port", "0", "--host", "127.0.0.1"],
        // Debug JSON logs, so every component and the engine child's lines are checked for duplicated keys.
        env: { TDIST_LOG_LEVEL: "debug", TDIST_LOG_FORMAT: "json", TDIST_CACHE_DIR: TEST_CACHE_DIR },
      });
      processes.push(run);
      const [, url] = (await run.waitForOutput(/OpenAI API at (http:\/\/[^\s]+)\/v1/, 90_000)) as RegExpMatchArray;
      const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 20_000 });
      const completion = await openai.completions.create({ model: "tdist-tiny-random", prompt: "hi", max_tokens: 4 });
      expect(completion.usage?.completion_tokens).toBe(4);
      if (signal === "SIGINT") {
        // `tdist status --url` sees the embedded run's memory discovery through its HTTP port.
        const status = new NodeProcess({
          name: "status",
          script: CLI,
          args: ["status", "--url", url as string, "--json"],
        });
        processes.push(status);
        expect(await status.exited(15_000)).toMatchObject({ code: 0 });
        const listed = JSON.parse(status.output.slice(status.output.indexOf("{"))) as { models: { name: string }[] };
        expect(listed.models.map((model) => model.name)).toContain("tdist-tiny-random");
      }
      const engines = childPids(run.pid as number);
      expect(engines.length).toBeGreaterThan(0);
      run.signal(signal);
      // Before the fix the process stayed up after "runtime stopped": its engine child kept the event loop alive.
      expect(await run.exited(15_000)).toMatchObject({ code: 0 });
      expect(engines.filter(processAlive)).toEqual([]);
      const logLines = run.output.split("\n").filter((line) => line.startsWith('{"level"'));
      expect(logLines.length).toBeGreaterThan(3);
      expect(logLines.filter((line) => duplicatedKeys(line).length > 0)).toEqual([]);
    }, 120_000);
  }

  it("run command - a llama.cpp `tdist worker` stops with its engine child on SIGTERM", async () => {
    const worker = new NodeProcess({
      name: "worker-SIGTERM",
      script: CLI,
      args: ["worker", "--engine", "llamacpp", "--discovery", "etcd", "--etcd-endpoints", etcd.endpoint],
      env: { TDIST_LOG_LEVEL: "warn", TDIST_CACHE_DIR: TEST_CACHE_DIR },
    });
    processes.push(worker);
    await worker.waitForOutput(/"event":"worker-ready"/, 90_000);
    const engines = childPids(worker.pid as number);
    expect(engines.length).toBeGreaterThan(0);
    worker.signal("SIGTERM");
    expect(await worker.exited(15_000)).toMatchObject({ code: 0 });
    expect(engines.filter(processAlive)).toEqual([]);
  }, 120_000);
});
