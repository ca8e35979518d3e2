import { serveEchoWorker } from "@tdist/engine-echo";
import { HttpFrontend, TokenizerPipeline } from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

describe("frontend cors - browsers are let in only from the configured origins", () => {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  const frontends: HttpFrontend[] = [];
  let open: HttpFrontend;
  let closed: HttpFrontend;

  const start = async (corsOrigins?: string[]): Promise<HttpFrontend> => {
    const runtime = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(runtime);
    const frontend = await HttpFrontend.start({
      runtime,
      createPipeline: TokenizerPipeline.create,
      port: 0,
      ...(corsOrigins ? { corsOrigins } : {}),
    });
    frontends.push(frontend);
    await frontend.models.waitForModel("echo");
    return frontend;
  };

  beforeAll(async () => {
    const worker = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    runtimes.push(worker);
    await serveEchoWorker(worker, { namespace: "cors" });
    open = await start(["https://app.example"]);
    closed = await start();
  });

  afterAll(async () => {
    await Promise.all(frontends.map((f) => f.close({ graceMs: 0 })));
    await Promise.all(runtimes.map((rt) => rt.shutdown({ graceMs: 0 })));
  });

  const preflight = (frontend: HttpFrontend, origin: string) =>
    fetch(`${frontend.url}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
      signal: AbortSignal.timeout(5_000),
    });

  it("frontend cors - a preflight from an allowed origin is answered with that origin", async () => {
    const response = await preflight(open, "https://app.example");
    expect(response.status).toBeLessThan(300);
    expect(response.headers.get("access-control-allow-origin")).toBe("https://app.example");
    const models = await fetch(`${open.url}/v1/models`, {
      headers: { origin: "https://app.example" },
      signal: AbortSignal.timeout(5_000),
    });
    expect(models.headers.get("access-control-allow-origin")).toBe("https://app.example");
  });

  it("frontend cors - another origin, or a frontend without --cors-origin, gets no CORS headers", async () => {
    const other = await fetch(`${open.url}/v1/models`, {
      headers: { origin: "https://evil.example" },
      signal: AbortSignal.timeout(5_000),
    });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
    const response = await fetch(`${closed.url}/v1/models`, {
      headers: { origin: "https://app.example" },
      signal: AbortSignal.timeout(5_000),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    expect((await preflight(closed, "https://app.example")).headers.get("access-control-allow-origin")).toBeNull();
  });
});
