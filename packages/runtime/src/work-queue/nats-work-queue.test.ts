import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { type NatsServer, startNats } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import { bounded } from "../event-plane/event-plane-conformance.js";
import { NatsWorkQueues, natsWorkQueueNames } from "./nats-work-queue.js";
import { describeWorkQueueConformance } from "./work-queue-conformance.js";

let nats: NatsServer;

beforeAll(async () => {
  nats = await startNats();
});

afterAll(async () => {
  await nats?.stop();
});

const connect = (): Promise<NatsWorkQueues> => NatsWorkQueues.connect({ url: nats.url, reconnectTimeWaitMs: 100 });

describeWorkQueueConformance("nats", connect, { ackWaitMs: 1_000 });

/** Resolves at the next reconnect of `connection`; start waiting before the server goes away. */
function nextReconnect(connection: NatsConnection): Promise<void> {
  return (async () => {
    for await (const status of connection.status()) if (status.type === "reconnect") return;
  })();
}

describe("nats work queue", () => {
  it("nats work queue - maps a queue onto a work-queue stream and a shared durable consumer", async () => {
    expect(natsWorkQueueNames("prefill")).toEqual({
      stream: "TDIST_WQ_prefill",
      subject: "tdist.wq.prefill",
      durable: "tdist_wq_prefill",
    });
    await using queues = await connect();
    await queues.open("layout-check", { ackWaitMs: 2_000 });
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const manager = await jetstreamManager(queues.connection);
    const stream = await manager.streams.info("TDIST_WQ_layout-check");
    expect(stream.config.retention).toBe("workqueue");
    expect(stream.config.subjects).toEqual(["tdist.wq.layout-check"]);
    const consumer = await manager.consumers.info("TDIST_WQ_layout-check", "tdist_wq_layout-check");
    expect(consumer.config.ack_policy).toBe("explicit");
    expect(consumer.config.ack_wait).toBe(2_000_000_000);
    // Re-opening with another ack wait updates the shared consumer.
    await queues.open("layout-check", { ackWaitMs: 3_000 });
    expect((await manager.consumers.info("TDIST_WQ_layout-check", "tdist_wq_layout-check")).config.ack_wait).toBe(
      3_000_000_000,
    );
  });

  it("nats work queue - queued items and consumers survive a nats-server restart", async () => {
    await using queues = await connect();
    const queue = await queues.open<string>("restart-check", { ackWaitMs: 1_000 });
    const idle = await queues.open<string>("restart-idle", { ackWaitMs: 1_000 });
    await queue.enqueue("before");
    const before = await bounded(queue.dequeue({ timeoutMs: 5_000 }), "dequeue before restart", 10_000);
    expect(before?.payload).toBe("before");
    await before?.ack();
    await queue.enqueue("persisted");

    // A dequeue waiting on an empty queue across the restart must complete once an item arrives.
    const pendingAcrossRestart = idle.dequeue({ timeoutMs: 30_000 });
    const reconnected = nextReconnect(queues.connection);
    const pidBefore = nats.pid;
    await bounded(nats.restart(), "nats-server restart", 30_000);
    expect(nats.pid).not.toBe(pidBefore);
    await bounded(reconnected, "client reconnect", 15_000);

    const persisted = await bounded(queue.dequeue({ timeoutMs: 10_000 }), "persisted item after restart", 15_000);
    expect(persisted?.payload).toBe("persisted");
    expect(persisted?.deliveryCount).toBe(1);
    await persisted?.ack();
    expect(await queue.depth()).toBe(0);

    await idle.enqueue("after");
    const after = await bounded(pendingAcrossRestart, "dequeue pending across restart", 30_000);
    expect(after?.payload).toBe("after");
    expect(after?.deliveryCount).toBe(1);
    await after?.ack();
    expect(await idle.depth()).toBe(0);
  }, 60_000);

  it("nats work queue - an item held by a SIGKILLed process is redelivered exactly once", async () => {
    await using queues = await connect();
    const survivor = await queues.open<string>("sigkill-check", { ackWaitMs: 1_000 });
    await survivor.enqueue("held by the doomed");
    const { stream, durable } = natsWorkQueueNames("sigkill-check");
    // The doomed consumer is a bare nats.js client in another process, so the kill is a real crash.
    const script = `
      import { connect } from "@nats-io/transport-node";
      import { jetstream } from "@nats-io/jetstream";
      const nc = await connect({ servers: ${JSON.stringify(nats.url)} });
      const consumer = await jetstream(nc).consumers.get(${JSON.stringify(stream)}, ${JSON.stringify(durable)});
      const msg = await consumer.next({ expires: 5000 });
      process.stdout.write("held " + (msg ? msg.info.deliveryCount : 0) + "\\n");
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      // Bare specifiers in the script resolve from here, up to the workspace's node_modules.
      cwd: fileURLToPath(new URL(".", import.meta.url)),
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const [line] = (await bounded(once(child.stdout, "data"), "child to take the item", 10_000)) as [Buffer];
      expect(line.toString().trim()).toBe("held 1");
    } finally {
      child.kill("SIGKILL");
    }
    const killedAt = Date.now();
    await bounded(once(child, "exit"), "child exit");

    const redelivered = await bounded(survivor.dequeue({ timeoutMs: 6_000 }), "redelivery", 10_000);
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(500);
    expect(redelivered?.payload).toBe("held by the doomed");
    expect(redelivered?.deliveryCount).toBe(2);
    await redelivered?.ack();
    expect(await bounded(survivor.dequeue({ timeoutMs: 1_500 }), "no second redelivery", 5_000)).toBeUndefined();
    expect(await survivor.depth()).toBe(0);
  });

  it("nats work queue - connect keeps trying for connectTimeoutMs, then fails with dependency_unavailable", async () => {
    const startedAt = Date.now();
    const err = await NatsWorkQueues.connect({ url: "nats://127.0.0.1:1", connectTimeoutMs: 1_000 }).catch((e) => e);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_000);
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect((err as TdistError).category).toBe("cannot_connect");
    expect((err as Error).message).toContain("nats://127.0.0.1:1");
  });
});
