import { afterEach, describe, expect, it } from "vitest";
import { Context } from "../context.js";
import { MemoryDiscoveryStore } from "../discovery/memory-discovery.js";
import type { Handler } from "../handler.js";
import { DistributedRuntime } from "../runtime.js";
import { collect, expectError, wordsHandler } from "../testing/request-plane-suite.js";
import { delay, withTimeout } from "../util/abort.js";

describe("local plane", () => {
  let runtime: DistributedRuntime | undefined;

  afterEach(async () => {
    await runtime?.shutdown({ graceMs: 200 });
    runtime = undefined;
  });

  async function serve(handler: Handler<never, unknown>) {
    runtime = await DistributedRuntime.create({
      env: {},
      discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
    });
    const endpoint = runtime.namespace("test").component("local").endpoint("generate");
    await endpoint.serve(handler as Handler);
    const client = await endpoint.client();
    await client.waitForInstances({ timeoutMs: 1_000 });
    return client;
  }

  it("local - same runtime calls use the local plane without serialization", async () => {
    const marker = new Map([["k", 1]]);
    const client = await serve(async function* () {
      yield marker;
    });
    const [value] = await collect(client.generate({}));
    expect(value).toBe(marker);
  });

  it("local - streams words and keeps order", async () => {
    const client = await serve(wordsHandler as Handler<never, unknown>);
    expect(await collect(client.generate({ text: "a b c" }))).toEqual(["a", "b", "c"]);
  });

  it("local - break runs the handler's finally", async () => {
    let finallyAt = 0;
    const client = await serve(async function* () {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        finallyAt = performance.now();
      }
    });
    for await (const value of client.generate({})) if ((value as number) > 2) break;
    const brokeAt = performance.now();
    await withTimeout("finally", 1_000, undefined, async () => {
      while (finallyAt === 0) await delay(1);
    });
    expect(finallyAt - brokeAt).toBeLessThan(100);
  });

  it("local - handler errors become remote_handler errors", async () => {
    const client = await serve(async function* () {
      yield 1;
      throw new Error("boom");
    });
    const error = await expectError(collect(client.generate({})), "remote_handler");
    expect(error.message).toContain("boom");
  });

  it("local - kill rejects a pending next with cancelled and aborts the handler's signal", async () => {
    let sawAbort = false;
    const client = await serve(async function* (_req: never, ctx) {
      yield "first";
      try {
        await delay(10_000, ctx.signal);
      } catch {
        sawAbort = ctx.signal.aborted;
      }
    });
    const parent = new Context();
    const stream = client.generate({}, { context: parent });
    expect((await stream.next()).value).toBe("first");
    const pending = stream.next();
    parent.kill();
    await expectError(pending, "cancelled");
    await withTimeout("abort seen", 1_000, undefined, async () => {
      while (!sawAbort) await delay(1);
    });
  });

  it("local - timeoutMs kills the request with a timeout error", async () => {
    const client = await serve(async function* (_req: never, ctx) {
      await delay(10_000, ctx.signal);
      yield "late";
    });
    await expectError(collect(client.generate({}, { timeoutMs: 50 })), "timeout");
  });
});
