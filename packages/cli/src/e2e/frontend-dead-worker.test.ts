/**
 * A model whose only worker process dies (SIGKILL: no deregistration, its
 * lease still alive in etcd): `/health` names the model as unhealthy at
 * once, requests get a 503 naming the model with a code, and neither they
 * nor the stream that was cut expose the worker's address or the internal
 * endpoint path; the log keeps the detail, on one warn line without a stack.
 */
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, type Logger, withTimeout } from "@tdist/runtime";
import { type EtcdServer, NodeProcess, startEtcd } from "@tdist/testkit";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sseEvents } from "../testing/sse-events.js";

const BOUND_MS = 20_000;
const MODEL = "doomed";

interface LogLine {
  level: "debug" | "info" | "warn" | "error";
  fields: Record<string, unknown>;
  message: string | undefined;
}

function recordingLogger(lines: LogLine[]): Logger {
  const at =
    (level: LogLine["level"]) =>
    (fields: object, message?: string): void => {
      lines.push({ level, fields: fields as Record<string, unknown>, message });
    };
  const logger: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => logger,
  };
  return logger;
}

describe("frontend - a dead worker", () => {
  let etcd: EtcdServer;
  let worker: NodeProcess;
  let runtime: DistributedRuntime;
  let frontend: HttpFrontend;
  const logs: LogLine[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
    worker = new NodeProcess({
      name: "echo worker",
      script: "packages/cli/src/e2e/echo-worker-process.mjs",
      args: [etcd.endpoint, "dead-worker", MODEL, "20"],
    });
    await worker.waitForOutput(/echo worker ready/, BOUND_MS);
    runtime = await DistributedRuntime.create({
      env: {},
      discovery: { kind: "etcd", endpoints: [etcd.endpoint] },
      requestPlane: { kind: "tcp", host: "127.0.0.1" },
    });
    frontend = await HttpFrontend.start({
      runtime,
      createPipeline: TokenizerPipeline.create,
      port: 0,
      logger: recordingLogger(logs),
    });
    await frontend.models.waitForModel(MODEL, BOUND_MS);
  });

  afterAll(async () => {
    await frontend?.close({ graceMs: 500 });
    await runtime?.shutdown({ graceMs: 500 });
    if (worker?.running) await worker.kill();
    await etcd?.stop();
  });

  it("frontend dead worker - /health names the model, requests get a 503 naming it, and no internal address leaks", async () => {
    const openai = new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: BOUND_MS });
    const served = await openai.completions.create({ model: MODEL, prompt: "alive" });
    expect(served.choices[0]?.text).toBe("alive");
    expect((await fetch(`${frontend.url}/health`)).status).toBe(200);

    // A long stream (20 ms a token) that the worker's death cuts.
    const response = await fetch(`${frontend.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "word ".repeat(500), max_tokens: 400, stream: true }),
    });
    let killed: Promise<unknown> | undefined;
    const events = await withTimeout("cut stream", BOUND_MS, undefined, () =>
      sseEvents(response, (count) => {
        if (count === 3) killed = worker.kill();
      }),
    );
    await withTimeout("worker killed", BOUND_MS, undefined, async () => killed);
    const errors = events.filter((e): e is { error: { message: string; code: string } } => {
      return typeof e === "object" && e !== null && "error" in e;
    });
    expect(errors).toHaveLength(1);
    expect(errors[0]?.error.code).toBe("disconnected");
    expect(errors[0]?.error.message).toContain(`"${MODEL}"`);
    expect(JSON.stringify(events)).not.toMatch(/127\.0\.0\.1|dead-worker\/backend/);
    expect(events.at(-1)).toBe("[DONE]");

    // Its lease lives on in etcd (120 s), so the model stays listed; but it has no live worker.
    const health = await fetch(`${frontend.url}/health`);
    expect(health.status).toBe(503);
    const body = (await health.json()) as {
      status: string;
      message: string;
      models: { name: string; status: string; live_workers: number }[];
    };
    expect(body.status).toBe("unhealthy");
    expect(body.message).toContain(`"${MODEL}"`);
    expect(body.models).toEqual([{ name: MODEL, status: "unhealthy", workers: 1, live_workers: 0 }]);

    for (const stream of [false, true]) {
      const refused = await fetch(`${frontend.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, prompt: "anyone there?", stream }),
      });
      expect(refused.status).toBe(503);
      const text = await refused.text();
      expect(text).not.toMatch(/127\.0\.0\.1|dead-worker\/backend/);
      const error = (JSON.parse(text) as { error: { message: string; code: string; type: string } }).error;
      expect(error.code).toBe("no_instances");
      expect(error.type).toBe("service_unavailable");
      expect(error.message).toContain(`"${MODEL}"`);
    }

    // The detail goes to the log: routine 503s on one warn line, with no stack.
    const refusals = logs.filter((line) => line.fields.status === 503);
    expect(refusals.length).toBeGreaterThanOrEqual(3);
    for (const line of refusals) {
      expect(line.level).toBe("warn");
      expect(line.fields).not.toHaveProperty("err");
      expect(line.fields.model).toBe(MODEL);
      expect(typeof line.fields.detail).toBe("string");
    }
    expect(refusals.map((line) => line.fields.code)).toContain("disconnected");
  });
});
