import { MemoryEventBus, MemoryEventPlane } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import type { KvCacheEvent } from "../kv/kv-events.js";
import { kvEventsSubject, MemoryKvEventHistory } from "./kv-event-history.js";

function stored(eventId: number, blocks: number): KvCacheEvent {
  return {
    workerId: "w1",
    eventId,
    data: {
      type: "stored",
      parentHash: null,
      blocks: Array.from({ length: blocks }, (_, i) => ({
        blockHash: (eventId * 1000 + i + 1).toString(16),
        tokensHash: (i + 1).toString(16),
      })),
    },
  };
}

async function eventually(check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

describe("kv-event-history", () => {
  it("kv-event-history - keeps the most recent events within its event and block bounds", async () => {
    const bus = new MemoryEventBus();
    const subject = kvEventsSubject("hist", "backend");
    const byEvents = MemoryKvEventHistory.forBus(bus, subject, { maxEvents: 3 });
    expect(MemoryKvEventHistory.forBus(bus, subject)).toBe(byEvents);
    await using plane = new MemoryEventPlane({ bus });
    for (let i = 0; i < 5; i++) await plane.publish(subject, stored(i, 1));
    await eventually(() => byEvents.events().at(-1)?.eventId === 4);
    expect(byEvents.events().map((e) => e.eventId)).toEqual([2, 3, 4]);
    await byEvents.close();

    const byBlocks = MemoryKvEventHistory.forBus(bus, subject, { maxBlocks: 10 });
    expect(byBlocks).not.toBe(byEvents);
    for (let i = 0; i < 4; i++) await plane.publish(subject, stored(i, 4));
    await eventually(() => byBlocks.events().at(-1)?.eventId === 3);
    // 16 blocks published, at most 10 kept: the two newest events.
    expect(byBlocks.events().map((e) => e.eventId)).toEqual([2, 3]);
    await byBlocks.close();
  });

  it("kv-event-history - malformed events are not kept, so a replay does not meet them again", async () => {
    const bus = new MemoryEventBus();
    const subject = kvEventsSubject("hist", "backend");
    const history = MemoryKvEventHistory.forBus(bus, subject);
    await using plane = new MemoryEventPlane({ bus });
    await plane.publish(subject, stored(0, 1));
    await plane.publish(subject, { workerId: "w1", eventId: 1, data: { type: "stored", parentHash: null, blocks: 5 } });
    await plane.publish(subject, "not an event");
    await plane.publish(subject, stored(1, 1));
    await eventually(() => history.events().at(-1)?.eventId === 1);
    expect(history.events().map((e) => e.eventId)).toEqual([0, 1]);
    await history.close();
  });

  it("kv-event-history - the subject without a component covers every component of the namespace", () => {
    expect(kvEventsSubject("ns1")).toBe("tdist.ns.ns1.*.kv-events");
    expect(kvEventsSubject("ns1", "backend")).toBe("tdist.ns.ns1.backend.kv-events");
    expect(() => MemoryKvEventHistory.forBus(new MemoryEventBus(), "x", { maxEvents: 0 })).toThrow();
  });
});
