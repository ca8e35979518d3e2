import { afterEach, describe, expect, it, vi } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import type { EventMessage, EventPlane, EventSubscription } from "./event-plane.js";

/**
 * The behaviour every event plane backend must show, run against each one by
 * its own test file. `createPlane` returns a new handle on one shared backend
 * per call (a separate connection for NATS), standing for another process.
 *
 * Test-only: imports vitest.
 */
export function describeEventPlaneConformance(backend: string, createPlane: () => Promise<EventPlane>): void {
  describe(`event plane conformance (${backend})`, () => {
    const planes: EventPlane[] = [];
    let subjectCounter = 0;

    const plane = async (): Promise<EventPlane> => {
      const created = await createPlane();
      planes.push(created);
      return created;
    };
    /** A subject no other test uses, so tests never see each other's events. */
    const uniqueRoot = (): string => `conformance.${process.pid}.${Date.now().toString(36)}.${subjectCounter++}`;

    afterEach(async () => {
      await Promise.all(planes.splice(0).map((p) => p.close()));
    });

    it("event plane - delivers events in publish order with their subject", async () => {
      const [subscriber, publisher] = [await plane(), await plane()];
      const subject = `${uniqueRoot()}.ordered`;
      const sub = subscriber.subscribe<{ i: number }>(subject);
      await bounded(sub.ready, "subscription ready");
      for (let i = 0; i < 100; i++) await publisher.publish(subject, { i });
      const got = await take(sub, 100);
      expect(got.map((m) => m.payload.i)).toEqual([...Array(100).keys()]);
      expect(got.every((m) => m.subject === subject)).toBe(true);
    });

    it("event plane - wildcard subjects match one token (*) or the rest (>)", async () => {
      const [subscriber, publisher] = [await plane(), await plane()];
      const root = uniqueRoot();
      const star = subscriber.subscribe<number>(`${root}.*.kv`);
      const rest = subscriber.subscribe<number>(`${root}.>`);
      await bounded(Promise.all([star.ready, rest.ready]), "subscriptions ready");
      const published = [`${root}.a.kv`, `${root}.b.kv`, `${root}.a.metrics`, `${root}.a.kv.deep`, `${root}.c.kv`];
      for (const [i, subject] of published.entries()) await publisher.publish(subject, i);
      // The last subject matches both patterns, so receiving it means everything before it arrived.
      expect((await take(star, 3)).map((m) => m.subject)).toEqual([`${root}.a.kv`, `${root}.b.kv`, `${root}.c.kv`]);
      expect((await take(rest, 5)).map((m) => m.subject)).toEqual(published);
      expect(star.buffered).toBe(0);
    });

    it("event plane - a queue group delivers each event to exactly one member", async () => {
      const [first, second, publisher] = [await plane(), await plane(), await plane()];
      const subject = `${uniqueRoot()}.jobs`;
      const members = [
        first.subscribe<number>(subject, { queueGroup: "workers" }),
        first.subscribe<number>(subject, { queueGroup: "workers" }),
        second.subscribe<number>(subject, { queueGroup: "workers" }),
      ];
      const watcher = second.subscribe<number>(subject);
      await bounded(Promise.all([...members, watcher].map((s) => s.ready)), "subscriptions ready");
      const total = 60;
      for (let i = 0; i < total; i++) await publisher.publish(subject, i);
      // Every plain subscriber sees all events; the watcher's last one fences the group's deliveries
      // only per connection, so wait until the members together hold all of them.
      expect((await take(watcher, total)).map((m) => m.payload)).toEqual([...Array(total).keys()]);
      await vi.waitFor(() => expect(members.reduce((n, s) => n + s.buffered, 0)).toBe(total), {
        timeout: 5_000,
        interval: 10,
      });
      const perMember = await Promise.all(members.map((s) => take(s, s.buffered)));
      const received = perMember.flat().map((m) => m.payload);
      expect(new Set(received).size).toBe(total);
      for (const got of perMember) {
        expect(got.length).toBeGreaterThan(0);
        expect(got.map((m) => m.payload)).toEqual([...got.map((m) => m.payload)].sort((a, b) => a - b));
      }
    });

    it("event plane - close() ends a pending iteration and stops delivery", async () => {
      const [subscriber, publisher] = [await plane(), await plane()];
      const subject = `${uniqueRoot()}.closing`;
      const sub = subscriber.subscribe<number>(subject);
      await bounded(sub.ready, "subscription ready");
      const pending = sub[Symbol.asyncIterator]().next();
      sub.close();
      expect(await bounded(pending, "iteration end")).toEqual({ value: undefined, done: true });
      await publisher.publish(subject, 1);
      expect(sub.buffered).toBe(0);
      const afterClose: number[] = [];
      for await (const m of sub) afterClose.push(m.payload);
      expect(afterClose).toEqual([]);
    });

    it("event plane - break in for await closes the subscription", async () => {
      const [subscriber, publisher] = [await plane(), await plane()];
      const subject = `${uniqueRoot()}.breaking`;
      const sub = subscriber.subscribe<number>(subject);
      await bounded(sub.ready, "subscription ready");
      await publisher.publish(subject, 1);
      await publisher.publish(subject, 2);
      const seen = await bounded(
        (async () => {
          for await (const m of sub) return m.payload;
          return undefined;
        })(),
        "first event",
      );
      expect(seen).toBe(1);
      expect(await bounded(sub[Symbol.asyncIterator]().next(), "next after break")).toEqual({
        value: undefined,
        done: true,
      });
    });

    it("event plane - an aborted signal ends the subscription", async () => {
      const [subscriber, publisher] = [await plane(), await plane()];
      const subject = `${uniqueRoot()}.aborting`;
      const controller = new AbortController();
      const sub = subscriber.subscribe<number>(subject, { signal: controller.signal });
      await bounded(sub.ready, "subscription ready");
      await publisher.publish(subject, 1);
      const received: number[] = [];
      const loop = (async () => {
        for await (const m of sub) {
          received.push(m.payload);
          controller.abort();
        }
      })();
      await bounded(loop, "iteration to end after abort");
      expect(received).toEqual([1]);

      const preAborted = subscriber.subscribe<number>(subject, { signal: AbortSignal.abort() });
      expect(await bounded(preAborted[Symbol.asyncIterator]().next(), "pre-aborted next")).toEqual({
        value: undefined,
        done: true,
      });
    });

    it("event plane - closing the plane ends its subscriptions", async () => {
      const subscriber = await plane();
      const sub = subscriber.subscribe<number>(`${uniqueRoot()}.plane-close`);
      await bounded(sub.ready, "subscription ready");
      const pending = sub[Symbol.asyncIterator]().next();
      await bounded(subscriber.close(), "plane close");
      expect(await bounded(pending, "iteration end")).toEqual({ value: undefined, done: true });
      await expect(subscriber.publish(`${uniqueRoot()}.x`, 1)).rejects.toSatisfy((err) =>
        TdistError.is(err, "shutting_down"),
      );
      expect(() => subscriber.subscribe("a.b")).toThrow(TdistError);
    });

    it("event plane - a slow subscriber keeps the newest maxBuffered events and counts drops", async () => {
      const [subscriber, publisher] = [await plane(), await plane()];
      const subject = `${uniqueRoot()}.slow`;
      const sub = subscriber.subscribe<number>(subject, { maxBuffered: 5 });
      await bounded(sub.ready, "subscription ready");
      for (let i = 0; i < 20; i++) await publisher.publish(subject, i);
      await vi.waitFor(() => expect(sub.dropped).toBe(15), { timeout: 5_000, interval: 10 });
      expect(sub.buffered).toBe(5);
      expect((await take(sub, 5)).map((m) => m.payload)).toEqual([15, 16, 17, 18, 19]);
    });

    it("event plane - each subscriber gets its own decoded copy of a JSON payload", async () => {
      const [subscriber, publisher] = [await plane(), await plane()];
      const subject = `${uniqueRoot()}.copies`;
      const a = subscriber.subscribe<{ list: number[]; when: string }>(subject);
      const b = subscriber.subscribe<{ list: number[]; when: string }>(subject);
      await bounded(Promise.all([a.ready, b.ready]), "subscriptions ready");
      const payload = { list: [1, 2], when: new Date(0), gone: undefined };
      await publisher.publish(subject, payload);
      const [[fromA], [fromB]] = await Promise.all([take(a, 1), take(b, 1)]);
      expect(fromA?.payload).toEqual({ list: [1, 2], when: "1970-01-01T00:00:00.000Z" });
      expect(fromA?.payload).not.toBe(fromB?.payload);
      fromA?.payload.list.push(3);
      expect(fromB?.payload.list).toEqual([1, 2]);
    });

    it("event plane - rejects wildcard publishes, bad subjects and non-JSON payloads by code", async () => {
      const p = await plane();
      const code = async (fn: () => unknown): Promise<string | undefined> => {
        try {
          await fn();
          return undefined;
        } catch (err) {
          return TdistError.is(err) ? err.code : "not a TdistError";
        }
      };
      expect(await code(() => p.publish("a.*", 1))).toBe("bad_request");
      expect(await code(() => p.publish("a..b", 1))).toBe("bad_request");
      expect(await code(() => p.publish("a.b", undefined))).toBe("codec_error");
      expect(await code(() => p.publish("a.b", 1n))).toBe("codec_error");
      expect(await code(() => p.subscribe("a.>.b"))).toBe("bad_request");
      expect(await code(() => p.subscribe("a.b", { queueGroup: "has space" }))).toBe("bad_request");
      expect(await code(() => p.subscribe("a.b", { maxBuffered: 0 }))).toBe("invalid_option");
    });
  });
}

/** Awaits `promise` for at most `ms`, failing the test with `what` otherwise. */
export async function bounded<T>(promise: Promise<T>, what: string, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads exactly `count` events, each within `ms`. */
export async function take<T>(sub: EventSubscription<T>, count: number, ms = 5_000): Promise<EventMessage<T>[]> {
  const iterator = sub[Symbol.asyncIterator]();
  const out: EventMessage<T>[] = [];
  while (out.length < count) {
    const result = await bounded(iterator.next(), `event ${out.length + 1} of ${count} on ${sub.subject}`, ms);
    if (result.done) throw new Error(`subscription ${sub.subject} ended after ${out.length} of ${count} events`);
    out.push(result.value);
  }
  return out;
}
