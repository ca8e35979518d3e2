/**
 * The behaviour every Discovery backend must show, as a vitest suite that
 * each backend's test file runs against its own implementation:
 *
 * ```ts
 * describeDiscoveryConformance("memory", async () => {
 *   const store = new MemoryDiscoveryStore();
 *   const discovery = new MemoryDiscovery(store);
 *   const second = new MemoryDiscovery(store);
 *   return { discovery, second, cleanup: async () => { await discovery.close(); await second.close(); } };
 * });
 * ```
 *
 * Test-only: imports vitest, and is not exported from the package entry.
 */
import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import type { Discovery, PrefixWatch, WatchEvent } from "./discovery.js";

export interface DiscoveryPair {
  /** The handle under test. */
  discovery: Discovery;
  /** A second handle on the same store, as another process would have. */
  second: Discovery;
  cleanup(): Promise<void>;
}

const stepTimeoutMs = 5_000;
const leaseTtlMs = 2_000;

/** Bounds one await of a test; fails naming the step. */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs = stepTimeoutMs): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next `count` events of a watch, bounded in time. */
export async function nextEvents(
  iterator: AsyncIterator<WatchEvent>,
  count: number,
  timeoutMs = stepTimeoutMs,
): Promise<WatchEvent[]> {
  const events: WatchEvent[] = [];
  const deadline = Date.now() + timeoutMs;
  while (events.length < count) {
    const result = await within(
      `watch event ${events.length + 1} of ${count}`,
      iterator.next(),
      Math.max(1, deadline - Date.now()),
    );
    if (result.done) throw new Error(`watch ended after ${events.length} of ${count} events`);
    events.push(result.value);
  }
  return events;
}

export function describeDiscoveryConformance(name: string, make: () => Promise<DiscoveryPair>): void {
  describe(`${name} discovery conformance`, () => {
    let pair: DiscoveryPair;
    let prefix: string;
    const watches: PrefixWatch[] = [];

    beforeEach(async () => {
      pair = await make();
      prefix = `conformance/${randomBytes(4).toString("hex")}/`;
    });

    afterEach(async () => {
      for (const watch of watches.splice(0)) watch.close();
      await pair.cleanup();
    });

    async function watchPrefix(discovery: Discovery, watchedPrefix = prefix): Promise<PrefixWatch> {
      const watch = await within("watchPrefix", discovery.watchPrefix(watchedPrefix));
      watches.push(watch);
      return watch;
    }

    it("lease - a key put with a lease can be read, listed and deleted", async () => {
      const { discovery, second } = pair;
      const lease = await within("grantLease", discovery.grantLease(leaseTtlMs));
      expect(lease.id).toMatch(/^[0-9a-f]+$/);
      expect(lease.ttlMs).toBeGreaterThanOrEqual(leaseTtlMs);
      expect(lease.lost.aborted).toBe(false);
      await within("put", discovery.put(`${prefix}a`, '{"n":1}', { lease }));
      await within("put", discovery.put(`${prefix}b`, '{"n":2}'));
      expect(await within("get", second.get(`${prefix}a`))).toBe('{"n":1}');
      expect(await within("list", second.list(prefix))).toEqual([
        { key: `${prefix}a`, value: '{"n":1}', leaseId: lease.id },
        { key: `${prefix}b`, value: '{"n":2}' },
      ]);
      await within("delete", discovery.delete(`${prefix}a`));
      expect(await within("get", second.get(`${prefix}a`))).toBeUndefined();
      await within("delete of a missing key", discovery.delete(`${prefix}missing`));
    });

    it("lease - two leases have different ids", async () => {
      const first = await within("grantLease", pair.discovery.grantLease(leaseTtlMs));
      const other = await within("grantLease", pair.second.grantLease(leaseTtlMs));
      expect(first.id).not.toBe(other.id);
    });

    it("lease - keys vanish when the lease is revoked", async () => {
      const { discovery, second } = pair;
      const lease = await within("grantLease", discovery.grantLease(leaseTtlMs));
      await within("put", discovery.put(`${prefix}leased-1`, "1", { lease }));
      await within("put", discovery.put(`${prefix}leased-2`, "2", { lease }));
      await within("put", discovery.put(`${prefix}plain`, "3"));
      await within("revoke", lease.revoke());
      expect(lease.lost.aborted).toBe(true);
      expect(TdistError.is(lease.lost.reason, "lease_lost")).toBe(true);
      expect((await within("list", second.list(prefix))).map((kv) => kv.key)).toEqual([`${prefix}plain`]);
      await within("second revoke", lease.revoke());
    });

    it("lease - a put with a revoked lease fails with lease_lost", async () => {
      const lease = await within("grantLease", pair.discovery.grantLease(leaseTtlMs));
      await within("revoke", lease.revoke());
      const error = await within(
        "put",
        pair.discovery.put(`${prefix}late`, "x", { lease }).catch((err) => err),
      );
      expect(TdistError.is(error, "lease_lost")).toBe(true);
      expect(await within("get", pair.second.get(`${prefix}late`))).toBeUndefined();
    });

    it("create - returns false when the key exists and keeps its value", async () => {
      const { discovery, second } = pair;
      const lease = await within("grantLease", discovery.grantLease(leaseTtlMs));
      expect(await within("create", discovery.create(`${prefix}owner`, "first", { lease }))).toBe(true);
      expect(await within("create again", discovery.create(`${prefix}owner`, "second"))).toBe(false);
      expect(await within("create from the second handle", second.create(`${prefix}owner`, "third"))).toBe(false);
      expect(await within("get", second.get(`${prefix}owner`))).toBe("first");
      await within("revoke", lease.revoke());
      expect(await within("create after revoke", second.create(`${prefix}owner`, "fourth"))).toBe(true);
      expect(await within("get", discovery.get(`${prefix}owner`))).toBe("fourth");
    });

    it("list - returns only keys under the prefix, sorted", async () => {
      const { discovery } = pair;
      await within("put", discovery.put(`${prefix}b`, "2"));
      await within("put", discovery.put(`${prefix}a`, "1"));
      await within("put", discovery.put(`${prefix.slice(0, -1)}x`, "outside"));
      const keys = (await within("list", discovery.list(prefix))).map((kv) => kv.key);
      expect(keys).toEqual([`${prefix}a`, `${prefix}b`]);
      expect(await within("list of an empty prefix", discovery.list(`${prefix}none/`))).toEqual([]);
    });

    it("watch - initial snapshot, then put and delete events in order", async () => {
      const { discovery } = pair;
      await within("put", discovery.put(`${prefix}b`, "b1"));
      await within("put", discovery.put(`${prefix}a`, "a1"));
      const watch = await watchPrefix(discovery);
      expect(watch.initial.map(({ key, value }) => ({ key, value }))).toEqual([
        { key: `${prefix}a`, value: "a1" },
        { key: `${prefix}b`, value: "b1" },
      ]);
      const iterator = watch[Symbol.asyncIterator]();
      await within("put", discovery.put(`${prefix}c`, "c1"));
      await within("put", discovery.put(`${prefix}a`, "a2"));
      await within("delete", discovery.delete(`${prefix}b`));
      await within("put outside the prefix", discovery.put(`${prefix.slice(0, -1)}-other`, "ignored"));
      await within("put", discovery.put(`${prefix}d`, "d1"));
      expect(await nextEvents(iterator, 4)).toEqual([
        { type: "put", key: `${prefix}c`, value: "c1" },
        { type: "put", key: `${prefix}a`, value: "a2" },
        { type: "delete", key: `${prefix}b` },
        { type: "put", key: `${prefix}d`, value: "d1" },
      ]);
    });

    it("watch - sees changes made through a second handle, lease revocation included", async () => {
      const { discovery, second } = pair;
      const watch = await watchPrefix(discovery);
      expect(watch.initial).toEqual([]);
      const iterator = watch[Symbol.asyncIterator]();
      const lease = await within("grantLease", second.grantLease(leaseTtlMs));
      await within("put", second.put(`${prefix}worker-1`, "w1", { lease }));
      await within("put", second.put(`${prefix}worker-2`, "w2", { lease }));
      expect(await nextEvents(iterator, 2)).toEqual([
        { type: "put", key: `${prefix}worker-1`, value: "w1" },
        { type: "put", key: `${prefix}worker-2`, value: "w2" },
      ]);
      await within("revoke", lease.revoke());
      const deletes = await nextEvents(iterator, 2);
      expect(deletes.map((event) => event.type)).toEqual(["delete", "delete"]);
      expect(deletes.map((event) => event.key).sort()).toEqual([`${prefix}worker-1`, `${prefix}worker-2`]);
    });

    it("watch - nothing is lost or repeated between the snapshot and the events", async () => {
      const { discovery, second } = pair;
      const total = 40;
      const writer = (async () => {
        for (let i = 0; i < total; i++) {
          await second.put(`${prefix}k${String(i).padStart(2, "0")}`, `v${i}`);
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      // Start watching while the writer runs, so the snapshot splits the writes.
      await within(
        "first writes",
        (async () => {
          while ((await discovery.list(prefix)).length < 5) await new Promise((resolve) => setTimeout(resolve, 1));
        })(),
      );
      const watch = await watchPrefix(discovery);
      await within("writer", writer);
      const initialKeys = watch.initial.map((kv) => kv.key);
      const events = await nextEvents(watch[Symbol.asyncIterator](), total - initialKeys.length);
      const eventKeys = events.map((event) => event.key);
      expect(events.every((event) => event.type === "put")).toBe(true);
      expect(initialKeys.filter((key) => eventKeys.includes(key))).toEqual([]);
      expect([...initialKeys, ...eventKeys]).toEqual(
        Array.from({ length: total }, (_, i) => `${prefix}k${String(i).padStart(2, "0")}`),
      );
    });

    it("watch - close ends a pending iteration", async () => {
      const watch = await watchPrefix(pair.discovery);
      const iterator = watch[Symbol.asyncIterator]();
      const pending = iterator.next();
      watch.close();
      expect(await within("iteration end", pending)).toEqual({ value: undefined, done: true });
      await within("put after close", pair.discovery.put(`${prefix}after`, "x"));
      expect(await within("next after close", iterator.next())).toEqual({ value: undefined, done: true });
    });

    it("watch - an aborted signal ends the watch", async () => {
      const controller = new AbortController();
      const watch = await within("watchPrefix", pair.discovery.watchPrefix(prefix, { signal: controller.signal }));
      watches.push(watch);
      const pending = watch[Symbol.asyncIterator]().next();
      controller.abort();
      expect(await within("iteration end", pending)).toEqual({ value: undefined, done: true });
    });

    it("watch - breaking out of for-await stops the watch", async () => {
      const { discovery } = pair;
      const watch = await watchPrefix(discovery);
      await within("put", discovery.put(`${prefix}one`, "1"));
      const seen: WatchEvent[] = [];
      await within(
        "for-await",
        (async () => {
          for await (const event of watch) {
            seen.push(event);
            break;
          }
        })(),
      );
      expect(seen).toEqual([{ type: "put", key: `${prefix}one`, value: "1" }]);
      await within("put after break", discovery.put(`${prefix}two`, "2"));
      expect(await within("next after break", watch[Symbol.asyncIterator]().next())).toEqual({
        value: undefined,
        done: true,
      });
    });

    it("close - revokes the handle's leases and ends its watches", async () => {
      const { discovery, second } = pair;
      const lease = await within("grantLease", discovery.grantLease(leaseTtlMs));
      await within("put", discovery.put(`${prefix}instance`, "up", { lease }));
      const watch = await watchPrefix(discovery);
      const pending = watch[Symbol.asyncIterator]().next();
      await within("close", discovery.close());
      expect(lease.lost.aborted).toBe(true);
      expect(await within("watch end", pending)).toEqual({ value: undefined, done: true });
      expect(await within("get", second.get(`${prefix}instance`))).toBeUndefined();
      const error = await within(
        "get after close",
        discovery.get(`${prefix}instance`).catch((err) => err),
      );
      expect(TdistError.is(error, "shutting_down")).toBe(true);
      await within("second close", discovery.close());
    });
  });
}
