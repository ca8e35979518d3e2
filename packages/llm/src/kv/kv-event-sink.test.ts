import { type Logger, silentLogger } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { KvEventSink } from "./kv-event-sink.js";
import type { KvCacheEvent } from "./kv-events.js";

describe("KvEventSink", () => {
  it("kv event sink - numbers events from 0 and publishes them in order, across slow publishes", async () => {
    const seen: { subject: string; event: KvCacheEvent }[] = [];
    const sink = new KvEventSink({
      workerId: "w1",
      subject: "ns.backend.kv-events",
      publisher: {
        async publish(subject, payload) {
          // The first publish is slower than the rest: order must hold anyway.
          const event = payload as KvCacheEvent;
          if (event.eventId === 0) await new Promise((resolve) => setTimeout(resolve, 20));
          seen.push({ subject, event });
        },
      },
    });
    const first = sink.publish([{ type: "cleared" }, { type: "removed", blockHashes: ["a"] }]);
    const second = sink.publish([{ type: "cleared" }]);
    await sink.publish([]);
    await Promise.all([first, second]);
    expect(seen.map(({ event }) => event.eventId)).toEqual([0, 1, 2]);
    expect(seen.every(({ subject, event }) => subject === "ns.backend.kv-events" && event.workerId === "w1")).toBe(
      true,
    );
    expect(sink.nextEventId).toBe(3);
  });

  it("kv event sink - a failed publish is logged, spends its id and does not stop later events", async () => {
    const published: number[] = [];
    const warnings: unknown[] = [];
    const logger: Logger = { ...silentLogger, warn: (fields) => warnings.push(fields) };
    const sink = new KvEventSink({
      workerId: "w1",
      subject: "s",
      logger,
      publisher: {
        async publish(_subject, payload) {
          const { eventId } = payload as KvCacheEvent;
          if (eventId === 1) throw new Error("event plane down");
          published.push(eventId);
        },
      },
    });
    await expect(sink.publish([{ type: "cleared" }, { type: "cleared" }, { type: "cleared" }])).resolves.toBe(
      undefined,
    );
    expect(published).toEqual([0, 2]);
    expect(warnings).toEqual([expect.objectContaining({ eventId: 1, workerId: "w1" })]);
  });
});
