import { randomBytes } from "node:crypto";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { type EtcdServer, freePort, startEtcd } from "@tdist/testkit";
import { Etcd3 } from "etcd3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import { delay } from "../util/abort.js";
import type { PrefixWatch, WatchEvent } from "./discovery.js";
import { describeDiscoveryConformance, nextEvents, within } from "./discovery-conformance.js";
import { EtcdDiscovery } from "./etcd-discovery.js";
import { leaseIdFromHex, leaseIdToHex } from "./etcd-lease.js";
import { EtcdPrefixWatch, listPrefix, prefixRangeEnd } from "./etcd-prefix-watch.js";

interface LogRecord {
  level: "debug" | "info" | "warn" | "error";
  obj: object;
  msg: string | undefined;
}

/** A logger that keeps what it is given, to assert that recoveries are not silent. */
function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const log =
    (level: LogRecord["level"]) =>
    (obj: object, msg?: string): void => {
      records.push({ level, obj, msg });
    };
  return {
    records,
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: () => recordingLogger(records),
  };
}

const ttlMs = 2_000;
/** The shortest TTL etcd grants with testkit's raft timings; used where a test must outlive TTLs. */
const shortTtlMs = 1_000;
const handles: EtcdDiscovery[] = [];
const servers: EtcdServer[] = [];
const rawClients: Etcd3[] = [];

async function connect(endpoint: string, logger?: Logger): Promise<EtcdDiscovery> {
  const discovery = await within("connect", EtcdDiscovery.connect({ endpoints: [endpoint], logger }));
  handles.push(discovery);
  return discovery;
}

async function ownEtcd(): Promise<EtcdServer> {
  const server = await startEtcd();
  servers.push(server);
  return server;
}

function rawClient(endpoint: string): Etcd3 {
  const client = new Etcd3({ hosts: endpoint });
  rawClients.push(client);
  return client;
}

afterEach(async () => {
  await Promise.all(handles.splice(0).map((handle) => handle.close().catch(() => {})));
  for (const client of rawClients.splice(0)) client.close();
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

let shared: EtcdServer;

beforeAll(async () => {
  shared = await startEtcd();
});

afterAll(async () => {
  await shared?.stop();
});

describeDiscoveryConformance("etcd", async () => {
  const discovery = await EtcdDiscovery.connect({ endpoints: [shared.endpoint] });
  const second = await EtcdDiscovery.connect({ endpoints: [shared.endpoint] });
  return {
    discovery,
    second,
    cleanup: async () => {
      await discovery.close();
      await second.close();
    },
  };
});

/** Applies watch events to a map, so a test can wait for a state instead of a sequence. */
class WatchedState {
  readonly values = new Map<string, string>();
  readonly events: WatchEvent[] = [];
  private readonly iterator: AsyncIterator<WatchEvent>;

  constructor(watch: PrefixWatch) {
    for (const kv of watch.initial) this.values.set(kv.key, kv.value);
    this.iterator = watch[Symbol.asyncIterator]();
  }

  async waitUntil(what: string, condition: (values: Map<string, string>) => boolean, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    while (!condition(this.values)) {
      const [event] = await nextEvents(this.iterator, 1, Math.max(1, deadline - Date.now())).catch((err: unknown) => {
        throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      });
      if (!event) continue;
      this.events.push(event);
      if (event.type === "put") this.values.set(event.key, event.value);
      else this.values.delete(event.key);
    }
  }
}

function uniquePrefix(): string {
  return `test/${randomBytes(4).toString("hex")}/`;
}

describe("etcd discovery", () => {
  it("etcd discovery - connect validates its options", async () => {
    for (const options of [
      { endpoints: [] },
      { endpoints: ["ftp://127.0.0.1:2379"] },
      { endpoints: [""] },
      { endpoints: ["http://127.0.0.1:2379"], dialTimeoutMs: 0 },
      { endpoints: ["http://127.0.0.1:2379"], requestTimeoutMs: Number.NaN },
    ]) {
      const error = await within(
        "connect",
        EtcdDiscovery.connect(options).catch((err: unknown) => err),
      );
      expect(TdistError.is(error, "invalid_option")).toBe(true);
    }
  });

  it("etcd discovery - connect to an unreachable etcd keeps trying for dialTimeoutMs, then fails with dependency_unavailable", async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const startedAt = Date.now();
    const error = await within(
      "connect",
      EtcdDiscovery.connect({ endpoints: [endpoint], dialTimeoutMs: 1_000 }).catch((err: unknown) => err),
    );
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_000);
    expect(TdistError.is(error, "dependency_unavailable")).toBe(true);
    expect((error as Error).message).toContain(endpoint);
    expect((error as Error).message).toContain("ECONNREFUSED");
    expect((error as Error).message).not.toContain("Resolution note");
  });

  it("etcd discovery - lease ids are etcd's ids in lower-case hex; TTLs round up to seconds", async () => {
    const discovery = await connect(shared.endpoint);
    const lease = await within("grantLease", discovery.grantLease(1_500));
    expect(lease.ttlMs).toBe(2_000);
    const client = rawClient(shared.endpoint);
    const info = await within("leaseTimeToLive", client.leaseClient.leaseTimeToLive({ ID: leaseIdFromHex(lease.id) }));
    expect(Number(info.TTL)).toBeGreaterThan(0);
    expect(leaseIdToHex(info.ID)).toBe(lease.id);
    expect(leaseIdToHex("-1")).toBe("ffffffffffffffff");
    expect(leaseIdFromHex("ffffffffffffffff")).toBe("-1");
    const error = await within(
      "grantLease",
      discovery.grantLease(0).catch((err: unknown) => err),
    );
    expect(TdistError.is(error, "invalid_option")).toBe(true);
  });

  it("etcd discovery - keep-alive holds a lease well past its TTL", async () => {
    const discovery = await connect(shared.endpoint);
    const prefix = uniquePrefix();
    const lease = await within("grantLease", discovery.grantLease(1_000));
    await within("put", discovery.put(`${prefix}alive`, "yes", { lease }));
    await delay(2_500);
    expect(await within("get", discovery.get(`${prefix}alive`))).toBe("yes");
    expect(lease.lost.aborted).toBe(false);
  });

  it("etcd discovery - a crashed holder's keys vanish within the TTL", async () => {
    const holder = await connect(shared.endpoint);
    const observer = await connect(shared.endpoint);
    const prefix = uniquePrefix();
    const lease = await within("grantLease", holder.grantLease(ttlMs));
    await within("put", holder.put(`${prefix}instance`, "up", { lease }));
    const watch = await within("watchPrefix", observer.watchPrefix(prefix));
    expect(watch.initial.map((kv) => kv.key)).toEqual([`${prefix}instance`]);
    const crashedAt = Date.now();
    await within("simulateCrash", holder.simulateCrash());
    const [event] = await nextEvents(watch[Symbol.asyncIterator](), 1, ttlMs + 3_000);
    const goneAfterMs = Date.now() - crashedAt;
    expect(event).toEqual({ type: "delete", key: `${prefix}instance` });
    // At most one TTL plus etcd's expiry check; keep-alives stopped at the crash.
    expect(goneAfterMs).toBeLessThan(ttlMs + 2_000);
    watch.close();
  });

  for (const mode of ["restart", "kill"] as const) {
    it(`etcd discovery - leases and watches survive an etcd ${mode === "kill" ? "SIGKILL and restart" : "restart"}`, async () => {
      const etcd = await ownEtcd();
      const holder = await connect(etcd.endpoint);
      const observer = await connect(etcd.endpoint);
      const prefix = uniquePrefix();
      const lease = await within("grantLease", holder.grantLease(shortTtlMs));
      await within("put", holder.put(`${prefix}before`, "1", { lease }));
      const state = new WatchedState(await within("watchPrefix", observer.watchPrefix(prefix)));
      if (mode === "kill") {
        await within("kill", etcd.kill());
        await delay(500);
        await within("restart", etcd.restart(), 20_000);
      } else {
        await within("restart", etcd.restart(), 20_000);
      }
      // The existing watch carries on: a write after the restart arrives.
      await within(
        "put after restart",
        retryWhileTransient(() => holder.put(`${prefix}after`, "2", { lease })),
      );
      await state.waitUntil(
        "observer sees the write after the restart",
        (values) => values.has(`${prefix}after`),
        10_000,
      );
      // Outlive the TTL twice: only working keep-alives keep the keys.
      await delay(2 * shortTtlMs + 500);
      await within("sentinel put", holder.put(`${prefix}sentinel`, "3"));
      await state.waitUntil("observer sees the sentinel", (values) => values.has(`${prefix}sentinel`), 5_000);
      expect(state.events.filter((event) => event.type === "delete")).toEqual([]);
      expect([...state.values.keys()].sort()).toEqual([`${prefix}after`, `${prefix}before`, `${prefix}sentinel`]);
      expect(lease.lost.aborted).toBe(false);
    });
  }

  it("etcd discovery - a watch cut off from etcd replays what it missed, in order, once", async () => {
    const proxy = await startProxy(shared.clientPort);
    try {
      const observer = await connect(`http://127.0.0.1:${proxy.port}`);
      const writer = await connect(shared.endpoint);
      const prefix = uniquePrefix();
      await within("put", writer.put(`${prefix}k0`, "0"));
      const watch = await within("watchPrefix", observer.watchPrefix(prefix));
      const iterator = watch[Symbol.asyncIterator]();
      await within("put", writer.put(`${prefix}k1`, "1"));
      expect(await nextEvents(iterator, 1)).toEqual([{ type: "put", key: `${prefix}k1`, value: "1" }]);
      proxy.cut();
      await within("put", writer.put(`${prefix}k2`, "2"));
      await within("put", writer.put(`${prefix}k1`, "1b"));
      await within("delete", writer.delete(`${prefix}k0`));
      await within("put", writer.put(`${prefix}k3`, "3"));
      await delay(300);
      proxy.restore();
      expect(await nextEvents(iterator, 4, 10_000)).toEqual([
        { type: "put", key: `${prefix}k2`, value: "2" },
        { type: "put", key: `${prefix}k1`, value: "1b" },
        { type: "delete", key: `${prefix}k0` },
        { type: "put", key: `${prefix}k3`, value: "3" },
      ]);
      await within("put", writer.put(`${prefix}k4`, "4"));
      expect(await nextEvents(iterator, 1)).toEqual([{ type: "put", key: `${prefix}k4`, value: "4" }]);
      watch.close();
    } finally {
      await proxy.close();
    }
  });

  it("etcd discovery - a lease etcd lost is granted again with the same id and its keys come back", async () => {
    const etcd = await ownEtcd();
    const holderLog = recordingLogger();
    const observerLog = recordingLogger();
    const holder = await connect(etcd.endpoint, holderLog);
    const observer = await connect(etcd.endpoint, observerLog);
    const prefix = uniquePrefix();
    const lease = await within("grantLease", holder.grantLease(ttlMs));
    await within("put", holder.put(`${prefix}instance`, "up", { lease }));
    expect(await within("create", holder.create(`${prefix}model`, "card", { lease }))).toBe(true);
    await within("put", holder.put(`${prefix}plain`, "not leased"));
    // Raise the store revision well above what a fresh etcd will reach, so the
    // observer's watch can only notice the loss by its revision going back.
    for (let i = 0; i < 30; i++) await within("filler put", holder.put(`filler/${i}`, "x"));
    const state = new WatchedState(await within("watchPrefix", observer.watchPrefix(prefix)));

    await within("restart without data", etcd.restart({ wipeData: true }), 20_000);

    await state.waitUntil(
      "observer sees the leased keys again and the unleased one gone",
      (values) =>
        values.get(`${prefix}instance`) === "up" &&
        values.get(`${prefix}model`) === "card" &&
        !values.has(`${prefix}plain`),
      15_000,
    );
    expect(lease.lost.aborted).toBe(false);
    const listed = await within(
      "list",
      retryWhileTransient(() => observer.list(prefix)),
    );
    expect(listed).toEqual([
      { key: `${prefix}instance`, value: "up", leaseId: lease.id },
      { key: `${prefix}model`, value: "card", leaseId: lease.id },
    ]);
    expect(
      holderLog.records.some((record) => record.level === "warn" && /granting it again/.test(record.msg ?? "")),
    ).toBe(true);
    expect(
      observerLog.records.some(
        (record) => record.level === "warn" && /listing the prefix again/.test(record.msg ?? ""),
      ),
    ).toBe(true);
    // The recovered lease is kept alive like any other.
    await delay(ttlMs + 500);
    expect(await within("get", holder.get(`${prefix}instance`))).toBe("up");
  });

  it("etcd discovery - a write that finds its lease gone grants it again under the same id", async () => {
    const log = recordingLogger();
    const discovery = await connect(shared.endpoint, log);
    const prefix = uniquePrefix();
    const lease = await within("grantLease", discovery.grantLease(10_000));
    await within("put", discovery.put(`${prefix}first`, "1", { lease }));
    const client = rawClient(shared.endpoint);
    await within("revoke behind its back", client.leaseClient.leaseRevoke({ ID: leaseIdFromHex(lease.id) }));
    await within("put", discovery.put(`${prefix}second`, "2", { lease }));
    const listed = await within("list", discovery.list(prefix));
    expect(listed).toEqual([
      { key: `${prefix}first`, value: "1", leaseId: lease.id },
      { key: `${prefix}second`, value: "2", leaseId: lease.id },
    ]);
    expect(lease.lost.aborted).toBe(false);
    expect(log.records.some((record) => record.level === "warn")).toBe(true);
  });

  it("etcd discovery - a key moved off a lease is not put back by the lease's recovery", async () => {
    const discovery = await connect(shared.endpoint);
    const prefix = uniquePrefix();
    const lease = await within("grantLease", discovery.grantLease(10_000));
    await within("put", discovery.put(`${prefix}moved`, "leased", { lease }));
    await within("put", discovery.put(`${prefix}deleted`, "leased", { lease }));
    await within("put", discovery.put(`${prefix}moved`, "plain"));
    await within("delete", discovery.delete(`${prefix}deleted`));
    const client = rawClient(shared.endpoint);
    await within("revoke behind its back", client.leaseClient.leaseRevoke({ ID: leaseIdFromHex(lease.id) }));
    await within("put", discovery.put(`${prefix}kept`, "leased", { lease }));
    const listed = await within("list", discovery.list(prefix));
    expect(listed).toEqual([
      { key: `${prefix}kept`, value: "leased", leaseId: lease.id },
      { key: `${prefix}moved`, value: "plain" },
    ]);
  });

  it("etcd discovery - a watch whose history was compacted lists again and emits the difference", async () => {
    const client = rawClient(shared.endpoint);
    const prefix = uniquePrefix();
    await client.put(`${prefix}a`).value("1");
    await client.put(`${prefix}b`).value("1");
    const stale = await within("list", listPrefix(client, prefix));
    await client.put(`${prefix}a`).value("2");
    await client.delete().key(`${prefix}b`);
    await client.put(`${prefix}c`).value("1");
    const latest = await within("list", listPrefix(client, prefix));
    await within("compact", client.kv.compact({ revision: latest.revision.toString(), physical: true }));
    const log = recordingLogger();
    const watch = new EtcdPrefixWatch(client, prefix, stale, log, () => {});
    try {
      const iterator = watch[Symbol.asyncIterator]();
      expect(await nextEvents(iterator, 3)).toEqual([
        { type: "delete", key: `${prefix}b` },
        { type: "put", key: `${prefix}a`, value: "2" },
        { type: "put", key: `${prefix}c`, value: "1" },
      ]);
      await client.put(`${prefix}d`).value("1");
      expect(await nextEvents(iterator, 1)).toEqual([{ type: "put", key: `${prefix}d`, value: "1" }]);
      expect(log.records.some((record) => record.level === "warn")).toBe(true);
    } finally {
      await watch.closeAndWait();
    }
  });

  it("etcd discovery - prefix range ends follow etcd's convention", () => {
    expect(prefixRangeEnd("a/").toString()).toBe("a0");
    expect([...prefixRangeEnd("a\u00ff")]).toEqual([0x61, 0xc3, 0xc0]);
    expect([...prefixRangeEnd("")]).toEqual([0]);
  });

  it("etcd discovery - operations while etcd is down fail with discovery_error", async () => {
    const etcd = await ownEtcd();
    const discovery = await EtcdDiscovery.connect({ endpoints: [etcd.endpoint], requestTimeoutMs: 1_000 });
    handles.push(discovery);
    await within("kill", etcd.kill());
    const error = await within(
      "get",
      discovery.get("anything").catch((err: unknown) => err),
    );
    expect(TdistError.is(error, "discovery_error")).toBe(true);
  });
});

/** Retries an operation that failed because etcd is still coming back up (bounded). */
async function retryWhileTransient<T>(operation: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await operation();
    } catch (err) {
      if (!TdistError.is(err, "discovery_error") || Date.now() > deadline) throw err;
      await delay(100);
    }
  }
}

interface CuttableProxy {
  port: number;
  /** Drops every connection and refuses new ones, as a network partition would. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** A TCP proxy to a local port whose connections a test can cut. */
async function startProxy(targetPort: number): Promise<CuttableProxy> {
  const sockets = new Set<Socket>();
  let down = false;
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = netConnect({ host: "127.0.0.1", port: targetPort });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  const port = await within(
    "proxy listen",
    new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const address = server.address();
        resolve(typeof address === "object" && address ? address.port : 0);
      });
    }),
  );
  return {
    port,
    cut() {
      down = true;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      down = false;
    },
    close: () =>
      within(
        "proxy close",
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          server.close(() => resolve());
        }),
      ),
  };
}
