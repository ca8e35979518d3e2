import { describe, expect, it } from "vitest";
import { bounded, describeEventPlaneConformance, take } from "./event-plane-conformance.js";
import { MemoryEventBus, MemoryEventPlane } from "./memory-event-plane.js";

const bus = new MemoryEventBus();
describeEventPlaneConformance("memory", async () => new MemoryEventPlane({ bus }));

describe("memory event plane", () => {
  it("memory event plane - planes on different buses do not see each other", async () => {
    await using a = new MemoryEventPlane({ bus: new MemoryEventBus() });
    await using b = new MemoryEventPlane({ bus: new MemoryEventBus() });
    const sub = a.subscribe<number>("isolated.topic");
    await b.publish("isolated.topic", 1);
    await a.publish("isolated.topic", 2);
    expect((await take(sub, 1)).map((m) => m.payload)).toEqual([2]);
    expect(sub.buffered).toBe(0);
  });

  it("memory event plane - the shared bus connects planes created without one", async () => {
    await using a = new MemoryEventPlane();
    await using b = new MemoryEventPlane();
    expect(a.bus).toBe(MemoryEventBus.shared());
    const sub = a.subscribe<string>("shared.topic");
    await bounded(sub.ready, "ready");
    await b.publish("shared.topic", "hello");
    expect((await take(sub, 1))[0]?.payload).toBe("hello");
  });
});
