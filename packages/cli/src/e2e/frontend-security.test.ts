/**
 * The frontend's security with the official `openai` client: API keys
 * (Bearer, several), open probes, /metrics and /status behind the key,
 * HTTPS with a private CA, the concurrency cap (429 with Retry-After), a
 * slowloris client cut off by the header timeout while others are served,
 * oversize headers (431); and no key in any log line or error body.
 */

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serveEchoWorker } from "@tdist/engine-echo";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import { makeTestCertificates, type TestCertificates } from "@tdist/testkit";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordingLogger } from "../testing/recording-logger.js";
import { fetchTrusting } from "../testing/trusting-fetch.js";

const BOUND_MS = 15_000;
const KEYS = ["sk-tdist-first-0a1b2c3d4e5f", "sk-tdist-second-9f8e7d6c5b4a"];
const WRONG_KEY = "sk-tdist-wrong-77665544";
const HEADERS_TIMEOUT_MS = 500;

/** Every log line and error body of these runs, as text: the secret scan reads it. */
const seen: string[] = [];

/** What an openai call threw, recorded for the scan. */
async function apiError(call: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await withTimeout("openai call", BOUND_MS, undefined, () => call);
  } catch (err) {
    if (!(err instanceof OpenAI.APIError)) throw err;
    seen.push(err.message, JSON.stringify(err.error ?? null));
    return err;
  }
  throw new Error("the call succeeded");
}

async function get(url: string, apiKey?: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url, {
    signal: AbortSignal.timeout(BOUND_MS),
    ...(apiKey ? { headers: { authorization: `Bearer ${apiKey}` } } : {}),
  });
  const body = await response.text();
  seen.push(body);
  return { status: response.status, body };
}

/** Writes `head` on a raw socket and collects what comes back until the server closes it. */
function rawExchange(port: number, head: string): Promise<string> {
  return withTimeout("raw exchange", BOUND_MS, undefined, () => {
    return new Promise((resolve, reject) => {
      const socket = connect(port, "127.0.0.1");
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        text += chunk;
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(text));
      socket.write(head);
    });
  });
}

describe("frontend security", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  const frontends: HttpFrontend[] = [];
  let dir: string;
  let certs: TestCertificates;
  /** Two keys, a cap of 2, a short header timeout, small headers, open /metrics. */
  let guarded: HttpFrontend;
  /** HTTPS, one key, /metrics behind it. */
  let tls: HttpFrontend;

  const runtime = async (): Promise<DistributedRuntime> => {
    const rt = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(rt);
    return rt;
  };

  const client = (apiKey: string, frontend = guarded, extra: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) =>
    new OpenAI({ baseURL: `${frontend.url}/v1`, apiKey, maxRetries: 0, timeout: BOUND_MS, ...extra });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tdist-frontend-security-"));
    certs = await makeTestCertificates({ dir, hosts: ["127.0.0.1", "localhost"] });
    // 20 ms a token: a 150-token answer streams for 3 s, longer than the request timeout below.
    await serveEchoWorker(await runtime(), { namespace: "security", delayMsPerToken: 20 });
    guarded = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      apiKeys: KEYS,
      maxConcurrentRequests: 2,
      headersTimeoutMs: HEADERS_TIMEOUT_MS,
      requestTimeoutMs: 2_000,
      maxHeaderBytes: 4_096,
      status: async () => ({ topology: "secret" }),
      logger: recordingLogger(seen, { frontend: "guarded" }),
    });
    frontends.push(guarded);
    tls = await HttpFrontend.start({
      runtime: await runtime(),
      createPipeline: TokenizerPipeline.create,
      port: 0,
      apiKeys: [KEYS[0] as string],
      metricsAuth: true,
      tls: { cert: await readFile(certs.server.certFile), key: await readFile(certs.server.keyFile) },
      logger: recordingLogger(seen, { frontend: "tls" }),
    });
    frontends.push(tls);
    await Promise.all(frontends.map((f) => f.models.waitForModel("echo", BOUND_MS)));
  });

  afterAll(async () => {
    await Promise.all(frontends.map((f) => f.close({ graceMs: 0 })));
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 0 })));
    await rm(dir, { recursive: true, force: true });
  });

  it("frontend security - no key or a wrong key gets 401 invalid_api_key; either right key is served", async () => {
    const missing = await get(`${guarded.url}/v1/models`);
    expect(missing.status).toBe(401);
    expect(JSON.parse(missing.body)).toEqual({
      error: { message: expect.any(String), type: "invalid_request_error", param: null, code: "invalid_api_key" },
    });
    const wrong = await apiError(client(WRONG_KEY).completions.create({ model: "echo", prompt: "hi", max_tokens: 2 }));
    expect(wrong).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(wrong.status).toBe(401);
    expect(wrong.code).toBe("invalid_api_key");
    for (const key of KEYS) {
      const completion = await client(key).completions.create({ model: "echo", prompt: "hi there", max_tokens: 2 });
      expect(completion.usage?.completion_tokens).toBe(2);
    }
    expect(await guarded.metrics.rejectedRequests.get()).toMatchObject({
      values: [expect.objectContaining({ labels: { reason: "unauthorized" } })],
    });
  });

  it("frontend security - /health and /live stay open; /metrics is open unless metricsAuth; /status needs the key", async () => {
    expect((await get(`${guarded.url}/health`)).status).toBe(200);
    expect((await get(`${guarded.url}/live`)).status).toBe(200);
    expect((await get(`${guarded.url}/metrics`)).status).toBe(200);
    expect((await get(`${guarded.url}/status`)).status).toBe(401);
    expect(JSON.parse((await get(`${guarded.url}/status`, KEYS[1])).body)).toEqual({ topology: "secret" });
    expect((await get(`${guarded.url}/v1/nowhere`)).status).toBe(401);
  });

  it("frontend security - HTTPS round trip with a client trusting the CA; /metrics behind the key there", async () => {
    expect(tls.url.startsWith("https://")).toBe(true);
    const ca = await readFile(certs.caFile, "utf8");
    const trusting = fetchTrusting(ca);
    const completion = await client(KEYS[0] as string, tls, { fetch: trusting }).chat.completions.create({
      model: "echo",
      messages: [{ role: "user", content: "over tls" }],
      max_tokens: 3,
    });
    expect(completion.choices[0]?.message.content?.length).toBeGreaterThan(0);
    const refused = await apiError(
      client(KEYS[1] as string, tls, { fetch: trusting }).completions.create({ model: "echo", prompt: "x" }),
    );
    expect(refused.status).toBe(401);
    const metrics = async (apiKey?: string): Promise<number> => {
      const response = await trusting(
        `${tls.url}/metrics`,
        apiKey ? { headers: { authorization: `Bearer ${apiKey}` } } : {},
      );
      seen.push(await response.text());
      return response.status;
    };
    expect(await metrics()).toBe(401);
    expect(await metrics(KEYS[0])).toBe(200);
    // A client that does not trust the CA is refused by its own TLS check.
    await expect(fetch(`${tls.url}/live`, { signal: AbortSignal.timeout(BOUND_MS) })).rejects.toThrow();
  });

  it("frontend security - with the cap's streams open the next request gets 429 with Retry-After; served again after", async () => {
    const openai = client(KEYS[0] as string);
    const streams = await Promise.all(
      [0, 1].map(() =>
        openai.completions.create({ model: "echo", prompt: "word ".repeat(150), max_tokens: 150, stream: true }),
      ),
    );
    const iterators = streams.map((stream) => stream[Symbol.asyncIterator]());
    // Both streams have started: their slots are taken.
    await Promise.all(iterators.map((it) => withTimeout("first chunk", BOUND_MS, undefined, () => it.next())));
    const refused = await apiError(openai.completions.create({ model: "echo", prompt: "one more", max_tokens: 2 }));
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect(refused.status).toBe(429);
    expect(refused.code).toBe("too_many_requests");
    expect(refused.headers?.get("retry-after")).toBe("1");
    // Probes are not model requests: they answer while the cap is reached.
    expect((await get(`${guarded.url}/health`)).status).toBe(200);
    const counted = await guarded.metrics.rejectedRequests.get();
    expect(counted.values.find((v) => v.labels.reason === "concurrency_limit")?.value).toBe(1);
    // The streams outlive the 2 s request timeout: it bounds receiving a request, not answering it.
    const lengths = await Promise.all(
      iterators.map(async (it) => {
        let chunks = 1;
        return withTimeout("stream end", BOUND_MS, undefined, async () => {
          for (let next = await it.next(); !next.done; next = await it.next()) chunks++;
          return chunks;
        });
      }),
    );
    for (const length of lengths) expect(length).toBeGreaterThanOrEqual(150);
    const after = await openai.completions.create({ model: "echo", prompt: "served again", max_tokens: 2 });
    expect(after.usage?.completion_tokens).toBe(2);
  });

  it("frontend security - a slowloris client is disconnected by the header timeout while others are served", async () => {
    const socket: Socket = connect(guarded.port, "127.0.0.1");
    let received = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      received += chunk;
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => {});
    const head = `GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${KEYS[0]}\r\nx-slow: ${"a".repeat(200)}\r\n\r\n`;
    let sent = 0;
    // One byte every 50 ms: the whole head would take 14 s, the server gives it HEADERS_TIMEOUT_MS.
    const drip = setInterval(() => {
      if (socket.destroyed || sent >= head.length) return;
      socket.write(head.charAt(sent++));
    }, 50);
    try {
      const served = await client(KEYS[1] as string).models.list();
      expect(served.data.map((model) => model.id)).toContain("echo");
      await withTimeout("slowloris disconnected", HEADERS_TIMEOUT_MS + 5_000, undefined, () => closed);
    } finally {
      clearInterval(drip);
      socket.destroy();
    }
    expect(sent).toBeLessThan(head.length);
    expect(received.startsWith("HTTP/1.1 408")).toBe(true);
    const body = JSON.parse(received.slice(received.indexOf("\r\n\r\n") + 4)) as { error: { code: string } };
    expect(body.error.code).toBe("timeout");
    seen.push(received);
  });

  it("frontend security - headers over the limit get 431 with an OpenAI error body", async () => {
    const response = await rawExchange(
      guarded.port,
      `GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${KEYS[0]}\r\nx-big: ${"b".repeat(8_000)}\r\n\r\n`,
    );
    seen.push(response);
    expect(response.startsWith("HTTP/1.1 431")).toBe(true);
    const body = JSON.parse(response.slice(response.indexOf("\r\n\r\n") + 4)) as { error: { code: string } };
    expect(body.error.code).toBe("headers_too_large");
    // The server still serves.
    expect((await get(`${guarded.url}/v1/models`, KEYS[0])).status).toBe(200);
  });

  it("frontend security - no API key appears in any log line or error body of these runs", () => {
    // The scan must have material: refusals were logged and bodies recorded.
    expect(seen.some((line) => line.includes("request refused"))).toBe(true);
    expect(seen.some((line) => line.includes("invalid_api_key"))).toBe(true);
    const text = seen.join("\n");
    for (const secret of [...KEYS, WRONG_KEY]) {
      expect(text.includes(secret), `a log line or error body holds ${secret.slice(0, 9)}…`).toBe(false);
    }
  });
});
