import type { NatsConnection } from "@nats-io/transport-node";
import { type NatsServer, startNats } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import { bounded, describeEventPlaneConformance, take } from "./event-plane-conformance.js";
import { NatsEventPlane } from "./nats-event-plane.js";

let nats: NatsServer;

beforeAll(async () => {
  nats = await startNats();
});

afterAll(async () => {
  await nats?.stop();
});

describeEventPlaneConformance("nats", () => NatsEventPlane.connect({ url: nats.url, reconnectTimeWaitMs: 100 }));

/** Resolves at the next reconnect of `connection`; start waiting before the server goes away. */
function nextReconnect(connection: NatsConnection): Promise<void> {
  return (async () => {
    for await (const status of connection.status()) if (status.type === "reconnect") return;
  })();
}

describe("nats event plane", () => {
  it("nats event plane - a subscription keeps receiving after nats-server restarts", async () => {
    await using subscriber = await NatsEventPlane.connect({ url: nats.url, reconnectTimeWaitMs: 100 });
    await using publisher = await NatsEventPlane.connect({ url: nats.url, reconnectTimeWaitMs: 100 });
    const sub = subscriber.subscribe<string>("restart.events");
    await bounded(sub.ready, "subscription ready");
    await publisher.publish("restart.events", "before");
    expect((await take(sub, 1))[0]?.payload).toBe("before");

    const reconnected = Promise.all([nextReconnect(subscriber.connection), nextReconnect(publisher.connection)]);
    const pidBefore = nats.pid;
    await bounded(nats.restart(), "nats-server restart", 30_000);
    expect(nats.pid).not.toBe(pidBefore);
    await bounded(reconnected, "both clients to reconnect", 15_000);
    // A flush round trip after reconnect proves the client re-sent its subscription.
    await bounded(subscriber.connection.flush(), "subscriber flush");

    await publisher.publish("restart.events", "after");
    expect((await take(sub, 1))[0]?.payload).toBe("after");
  });

  it("nats event plane - connect keeps trying for connectTimeoutMs, then fails with dependency_unavailable", async () => {
    const startedAt = Date.now();
    const err = await NatsEventPlane.connect({ url: "nats://127.0.0.1:1", connectTimeoutMs: 1_000 }).catch((e) => e);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_000);
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect((err as TdistError).category).toBe("cannot_connect");
    expect((err as Error).message).toContain("nats://127.0.0.1:1");
  });

  it("nats event plane - a plane over a shared connection leaves it open on close", async () => {
    await using owner = await NatsEventPlane.connect({ url: nats.url });
    const borrowed = NatsEventPlane.fromConnection(owner.connection);
    const sub = borrowed.subscribe<number>("shared.connection");
    await bounded(sub.ready, "ready");
    await borrowed.close();
    expect(owner.connection.isClosed()).toBe(false);
    expect(await bounded(sub[Symbol.asyncIterator]().next(), "ended")).toEqual({ value: undefined, done: true });
  });
});
