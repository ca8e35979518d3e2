import { describe, expect, it } from "vitest";
import { MemoryWorkQueueBroker, MemoryWorkQueues } from "./memory-work-queue.js";
import { describeWorkQueueConformance } from "./work-queue-conformance.js";

const broker = new MemoryWorkQueueBroker();
describeWorkQueueConformance("memory", async () => new MemoryWorkQueues({ broker }), { ackWaitMs: 300 });

describe("memory work queue", () => {
  it("memory work queue - queues of the same name on different brokers are separate", async () => {
    await using a = new MemoryWorkQueues({ broker: new MemoryWorkQueueBroker() });
    await using b = new MemoryWorkQueues({ broker: new MemoryWorkQueueBroker() });
    const qa = await a.open<number>("jobs");
    const qb = await b.open<number>("jobs");
    await qa.enqueue(1);
    expect(await qb.depth()).toBe(0);
    expect(await qb.dequeue({ timeoutMs: 0 })).toBeUndefined();
    expect((await qa.dequeue({ timeoutMs: 0 }))?.payload).toBe(1);
  });

  it("memory work queue - the shared broker connects queues created without one", async () => {
    await using a = new MemoryWorkQueues();
    await using b = new MemoryWorkQueues();
    expect(a.broker).toBe(MemoryWorkQueueBroker.shared());
    const name = `shared-${process.pid}`;
    await (await a.open<string>(name)).enqueue("hi");
    const item = await (await b.open<string>(name)).dequeue({ timeoutMs: 1_000 });
    expect(item?.payload).toBe("hi");
    await item?.ack();
  });

  it("memory work queue - each delivery decodes its own copy of the payload", async () => {
    await using queues = new MemoryWorkQueues({ broker: new MemoryWorkQueueBroker() });
    const queue = await queues.open<{ list: number[] }>("copies");
    const original = { list: [1] };
    await queue.enqueue(original);
    original.list.push(2);
    const first = await queue.dequeue({ timeoutMs: 1_000 });
    first?.payload.list.push(3);
    await first?.nak();
    const second = await queue.dequeue({ timeoutMs: 1_000 });
    expect(second?.payload).toEqual({ list: [1] });
  });
});
