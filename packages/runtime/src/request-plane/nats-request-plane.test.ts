import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type NatsServer, startInProcessCluster, startNats } from "@tdist/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { direct } from "../client/router-policy.js";
import { Context } from "../context.js";
import type { Handler } from "../handler.js";
import { silentLogger } from "../logger.js";
import { collect, describeRequestPlaneSuite, expectError, wordsHandler } from "../testing/request-plane-suite.js";
import { delay, withTimeout } from "../util/abort.js";
import { jsonCodec } from "./codec.js";
import { NatsRequestClient, type NatsRequestClientOptions } from "./nats-request-client.js";
import { NatsRequestServer } from "./nats-request-server.js";
import { instanceSubject } from "./nats-wire.js";
import type { ServedHandler } from "./request-plane.js";

let nats: NatsServer | undefined;

beforeAll(async () => {
  nats = await startNats({ jetstream: false });
});

afterAll(async () => {
  await nats?.stop();
});

function natsUrl(): string {
  if (nats === undefined) throw new Error("nats-server is not running");
  return nats.url;
}

describeRequestPlaneSuite("nats", () => ({ requestPlane: { kind: "nats", url: natsUrl() } }));

const PATH = "test/words/generate";

describe("nats request plane - faults", () => {
  const cleanups: Array<() => Promise<unknown>> = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  });

  async function startClient(extra: Partial<NatsRequestClientOptions> = {}): Promise<NatsRequestClient> {
    const client = await NatsRequestClient.connect({
      url: natsUrl(),
      maxFrameBytes: 16 * 1024 * 1024,
      connectTimeoutMs: 2_000,
      streamWindow: 16,
      codec: jsonCodec,
      logger: silentLogger,
      ...extra,
    });
    cleanups.push(() => client.close());
    return client;
  }

  async function startServer(instanceId: string, handler: Handler): Promise<NatsRequestServer> {
    const server = new NatsRequestServer({
      url: natsUrl(),
      instanceId,
      maxFrameBytes: 16 * 1024 * 1024,
      connectTimeoutMs: 2_000,
      codec: jsonCodec,
      logger: silentLogger,
    });
    cleanups.push(() => server.close());
    const entry: ServedHandler = { path: PATH, handler, inFlight: new Set() };
    await server.register(entry);
    return server;
  }

  async function rawConnection(): Promise<NatsConnection> {
    const connection = await connect({ servers: natsUrl() });
    cleanups.push(() => connection.close());
    return connection;
  }

  function open<T>(client: NatsRequestClient, subject: string, request: unknown) {
    return client.open<T>({ nats: subject }, request, { path: PATH, instanceId: "abc", context: new Context() });
  }

  it("nats - a stream opened with a killed context settles once, as cancelled, and sends nothing", async () => {
    const client = await startClient();
    const context = new Context();
    context.kill();
    const outcomes: string[] = [];
    const stream = client.open<string>(
      { nats: instanceSubject("deadbeef") },
      {},
      {
        path: PATH,
        instanceId: "abc",
        context,
        onSettled: (outcome) => outcomes.push(outcome.status),
      },
    );
    await expectError(stream.next(), "cancelled");
    expect(outcomes).toEqual(["cancelled"]);
  });

  it("nats - a request to a subject nobody serves fails with cannot_connect at once", async () => {
    const client = await startClient();
    const started = performance.now();
    await expectError(collect(open(client, instanceSubject("deadbeef"), { text: "x" })), "cannot_connect");
    expect(performance.now() - started).toBeLessThan(500);
  });

  it("nats - a server whose connection dies mid-stream fails the stream with disconnected within 1 s", async () => {
    const server = await startServer("a1", async function* (_request, ctx) {
      for (let i = 0; !ctx.isKilled; i++) {
        yield i;
        await delay(5, ctx.signal).catch(() => {});
      }
    });
    const client = await startClient();
    const stream = open<number>(client, server.subject, {});
    expect((await withTimeout("first", 2_000, undefined, () => stream.next())).done).toBe(false);
    // A crash: no drain, no END or ERROR, nothing more from this server.
    await server.connection?.close();
    const closedAt = performance.now();
    await expectError(
      (async () => {
        for (;;) if ((await stream.next()).done) return;
      })(),
      "disconnected",
    );
    expect(performance.now() - closedAt).toBeLessThan(1_000);
  });

  it("nats - a server that goes silent (subscribed but wedged) fails the stream with disconnected", async () => {
    const wedged = await rawConnection();
    const subject = instanceSubject("b2");
    wedged.subscribe(subject, { callback: () => {} });
    await wedged.flush();
    const client = await startClient({ heartbeatIntervalMs: 50, serverSilenceMs: 300 });
    const started = performance.now();
    await expectError(collect(open(client, subject, { text: "x" })), "disconnected");
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(1_000);
  });

  it("nats - a response missing from the sequence fails the stream instead of delivering a hole", async () => {
    const forger = await rawConnection();
    const subject = instanceSubject("c3");
    forger.subscribe(subject, {
      callback: (_err, msg) => {
        if (msg.data[0] !== 1 || !msg.reply) return;
        const data = (seq: number, body: string): Buffer =>
          Buffer.concat([Buffer.from([2, 0, 0, 0, seq]), Buffer.from(JSON.stringify(body))]);
        forger.publish(msg.reply, data(1, "one"));
        forger.publish(msg.reply, data(3, "three"));
      },
    });
    await forger.flush();
    const client = await startClient();
    const received: unknown[] = [];
    await expectError(
      (async () => {
        for await (const item of open(client, subject, {})) received.push(item);
      })(),
      "disconnected",
    );
    expect(received).toEqual(["one"]);
  });

  it("nats - a request over the payload limit fails locally with frame_too_large", async () => {
    const server = await startServer("d4", wordsHandler as Handler);
    const client = await startClient();
    const maxPayload = client.connection.info?.max_payload ?? 1024 * 1024;
    await expectError(collect(open(client, server.subject, { text: "x".repeat(maxPayload) })), "frame_too_large");
    expect(await collect(open(client, server.subject, { text: "still fine" }))).toEqual(["still", "fine"]);
  });

  it("nats - a response over the payload limit fails the stream with frame_too_large", async () => {
    const server = await startServer("e5", async function* () {
      yield "small";
      yield "x".repeat(2 * 1024 * 1024);
    });
    const client = await startClient();
    const received: unknown[] = [];
    await expectError(
      (async () => {
        for await (const item of open(client, server.subject, {})) received.push(item);
      })(),
      "frame_too_large",
    );
    expect(received).toEqual(["small"]);
  });

  it("nats - a caller that vanishes mid-stream has its handler killed", async () => {
    let finallyRan: () => void = () => {};
    const handlerDone = new Promise<void>((resolve) => {
      finallyRan = resolve;
    });
    const server = new NatsRequestServer({
      url: natsUrl(),
      instanceId: "f6",
      maxFrameBytes: 1024 * 1024,
      connectTimeoutMs: 2_000,
      codec: jsonCodec,
      logger: silentLogger,
      heartbeatIntervalMs: 50,
      callerSilenceMs: 300,
    });
    cleanups.push(() => server.close());
    const entry: ServedHandler = {
      path: PATH,
      handler: async function* (_request, ctx) {
        try {
          for (let i = 0; !ctx.isKilled; i++) yield i;
        } finally {
          finallyRan();
        }
      },
      inFlight: new Set(),
    };
    await server.register(entry);
    const client = await startClient();
    const stream = open<number>(client, server.subject, {});
    expect((await withTimeout("first", 2_000, undefined, () => stream.next())).done).toBe(false);
    // The caller's process dies: its connection closes without a KILL for the stream.
    await client.connection.close();
    await withTimeout("handler killed", 2_000, undefined, () => handlerDone);
    await withTimeout("in-flight empty", 2_000, undefined, async () => {
      while (entry.inFlight.size > 0) await delay(10);
    });
  });

  it("nats - requests after stopAccepting fail with shutting_down", async () => {
    const server = await startServer("a7", wordsHandler as Handler);
    const client = await startClient();
    expect(await collect(open(client, server.subject, { text: "before" }))).toEqual(["before"]);
    server.stopAccepting();
    await expectError(collect(open(client, server.subject, { text: "after" })), "shutting_down");
  });

  it("nats - a stream killed when the shutdown grace expires fails with shutting_down, not silence", async () => {
    const cluster = await startInProcessCluster(0, { requestPlane: { kind: "nats", url: natsUrl() } });
    cleanups.push(() => cluster.shutdown());
    const server = await cluster.add();
    await server
      .namespace("test")
      .component("words")
      .endpoint("generate")
      .serve(async function* (_request, ctx) {
        for (let i = 0; !ctx.isKilled; i++) {
          yield i;
          await delay(5, ctx.signal).catch(() => {});
        }
      });
    const caller = await cluster.add();
    const client = await caller.namespace("test").component("words").endpoint("generate").client();
    await client.waitForInstances({ timeoutMs: 2_000 });
    const stream = client.generate({}, { router: direct(server.instanceId as string) });
    expect((await withTimeout("first", 2_000, undefined, () => stream.next())).done).toBe(false);
    const shutdown = server.shutdown({ graceMs: 100 });
    const started = performance.now();
    await expectError(
      (async () => {
        for (;;) if ((await stream.next()).done) return;
      })(),
      "shutting_down",
    );
    expect(performance.now() - started).toBeLessThan(900);
    await withTimeout("shutdown", 5_000, undefined, () => shutdown);
    expect(server.state).toBe("stopped");
  });

  it("nats - a nats-server restart fails open streams with disconnected and later requests succeed", async () => {
    const echoOrCount: Handler<{ text?: string }, string | number> = async function* (request, ctx) {
      if (request.text !== undefined) {
        yield request.text;
        return;
      }
      for (let i = 0; !ctx.isKilled; i++) {
        yield i;
        await delay(5, ctx.signal).catch(() => {});
      }
    };
    const server = await startServer("a8", echoOrCount as Handler);
    const client = await startClient();
    const stream = open<number>(client, server.subject, {});
    expect((await withTimeout("first", 2_000, undefined, () => stream.next())).done).toBe(false);
    await nats?.restart();
    await expectError(
      (async () => {
        for (;;) if ((await stream.next()).done) return;
      })(),
      "disconnected",
    );
    // Both connections reconnect and the server re-subscribes; poll until a request goes through.
    const answer = await withTimeout("request after restart", 15_000, undefined, async () => {
      for (;;) {
        try {
          return await collect(open(client, server.subject, { text: "back" }), 2_000);
        } catch {
          await delay(100);
        }
      }
    });
    expect(answer).toEqual(["back"]);
  });
});
