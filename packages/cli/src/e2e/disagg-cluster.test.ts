import { delay, withTimeout } from "@tdist/runtime";
import { type EtcdServer, type NatsServer, NodeProcess, startEtcd, startNats } from "@tdist/testkit";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const CLI = "packages/cli/dist/main.js";
/** About 400 tokens: over the frontend's threshold below, and slow to "transfer" at the prefill worker's bandwidth. */
const LONG = "Explain how a bicycle gear train trades cadence for torque on a steep climb. ".repeat(24);

describe("disaggregated serving - frontend, prefill and decode workers as processes on etcd and NATS", () => {
  let etcd: EtcdServer;
  let nats: NatsServer;
  const processes: NodeProcess[] = [];
  let url: string;
  let openai: OpenAI;

  const flags = () => ["--discovery", "etcd", "--etcd-endpoints", etcd.endpoint, "--nats-url", nats.url];
  const env = { TDIST_LEASE_TTL_MS: "2000", TDIST_LOG_LEVEL: "warn", TDIST_NAMESPACE: "disagg" };

  function spawnCli(name: string, args: string[]): NodeProcess {
    const child = new NodeProcess({ name, script: CLI, args, env });
    processes.push(child);
    return child;
  }

  /** A mocker worker process in `mode`; resolves with its instance id once it serves. */
  async function worker(
    mode: "prefill" | "decode",
    extra: string[] = [],
  ): Promise<{ process: NodeProcess; id: string }> {
    const child = spawnCli(`${mode} worker`, [
      "worker",
      ...flags(),
      "--engine",
      "mocker",
      "--mode",
      mode,
      "--speedup",
      "10",
      ...extra,
    ]);
    const [, id] = (await child.waitForOutput(
      /"event":"worker-ready".*"instanceId":"([0-9a-f]+)"/,
    )) as RegExpMatchArray;
    return { process: child, id: id as string };
  }

  async function decisions(): Promise<Record<string, number>> {
    const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    const counts: Record<string, number> = {};
    for (const [, outcome, value] of text.matchAll(
      /dynamo_frontend_disagg_decisions_total\{model="mocker",outcome="([a-z_]+)"\} (\d+)/g,
    )) {
      counts[outcome as string] = Number(value);
    }
    return counts;
  }

  // Every long prompt starts differently: a repeated one is in the decode worker's cache, and rightly served there.
  let fresh = 0;
  const unique = () => `${++fresh} ${LONG}`;
  const complete = (prompt: string, maxTokens = 6) =>
    openai.completions.create({ model: "mocker", prompt, max_tokens: maxTokens }).withResponse();

  beforeAll(async () => {
    [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
    const frontend = spawnCli("frontend", [
      "frontend",
      ...flags(),
      "--router-mode",
      "kv",
      "--disagg-min-uncached-tokens",
      "64",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
    ]);
    [, url] = (await frontend.waitForOutput(/tdist frontend at (http:\/\/[^\s]+)\/v1/)) as [string, string];
    openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 20_000 });
  });

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.terminate(5_000)));
    await Promise.all([etcd?.stop(), nats?.stop()]);
  });

  it("disaggregated serving - long prompts cross from the prefill process to the decode process; a killed prefill worker costs no request", async () => {
    const decode = await worker("decode");
    // Slow simulated transfers (about 50 MB at 0.01 GB/s, ten times sped up: half a second) keep a
    // request on the prefill worker long enough to kill it there.
    const prefill = await worker("prefill", ["--kv-transfer-gbps", "0.01"]);
    await withTimeout("model listed", 15_000, undefined, async () => {
      while (!(await openai.models.list()).data.some((m) => m.id === "mocker")) await delay(100);
    });
    // The prefill pool is found through its own card: wait until a long prompt goes remote.
    await withTimeout("prefill worker in use", 15_000, undefined, async () => {
      for (;;) {
        const { response } = await complete(unique(), 2);
        if (response.headers.get("x-tdist-prefill-worker") !== null) return;
        await delay(100);
      }
    });

    const { data, response } = await complete(unique());
    expect(response.headers.get("x-tdist-prefill-worker")).toBe(prefill.id);
    expect(response.headers.get("x-tdist-worker")).toBe(decode.id);
    expect(data.usage?.completion_tokens).toBe(6);
    const short = await complete("Hi", 3);
    expect(short.response.headers.get("x-tdist-prefill-worker")).toBeNull();
    expect(short.data.usage?.completion_tokens).toBe(3);

    // Kill the prefill worker while it holds a request: the decode worker prefills it instead.
    const before = await decisions();
    const inFlight = complete(unique());
    await withTimeout("sent to the prefill worker", 10_000, undefined, async () => {
      while (((await decisions()).remote ?? 0) === (before.remote ?? 0)) await delay(5);
    });
    await prefill.process.kill();
    const rescued = await inFlight;
    expect(rescued.data.usage?.completion_tokens).toBe(6);
    expect(rescued.response.headers.get("x-tdist-prefill-worker")).toBeNull();
    expect((await decisions()).fallback ?? 0).toBe((before.fallback ?? 0) + 1);
    // And every request after it succeeds, remote or not, while the dead worker's lease runs out.
    for (let i = 0; i < 5; i++) expect((await complete(unique())).data.usage?.completion_tokens).toBe(6);

    // A new prefill worker joins and takes long prompts again.
    const replacement = await worker("prefill");
    await withTimeout("replacement in use", 15_000, undefined, async () => {
      for (;;) {
        const { response: next } = await complete(unique(), 2);
        if (next.headers.get("x-tdist-prefill-worker") === replacement.id) return;
        await delay(100);
      }
    });
  }, 90_000);
});
