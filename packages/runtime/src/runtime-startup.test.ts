import { type EtcdServer, freePort, type NatsServer, startEtcd, startNats } from "@tdist/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { within } from "./discovery/discovery-conformance.js";
import { MemoryDiscoveryStore } from "./discovery/memory-discovery.js";
import { TdistError } from "./errors/tdist-error.js";
import type { Logger } from "./logger.js";
import { DistributedRuntime } from "./runtime.js";

interface LogRecord {
  level: "debug" | "info" | "warn" | "error";
  obj: Record<string, unknown>;
  msg: string | undefined;
}

interface RecordingLogger extends Logger {
  records: LogRecord[];
  /** Settles on the first warn line. */
  firstWarn: Promise<LogRecord>;
  /** Settles on the first line that `matches`. */
  lineWhere(matches: (record: LogRecord) => boolean): Promise<LogRecord>;
}

/** Keeps every line with its child bindings merged in. */
function recordingLogger(): RecordingLogger {
  const records: LogRecord[] = [];
  const waiters = new Set<{ matches: (record: LogRecord) => boolean; resolve: (record: LogRecord) => void }>();
  const lineWhere = (matches: (record: LogRecord) => boolean): Promise<LogRecord> => {
    const seen = records.find(matches);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => waiters.add({ matches, resolve }));
  };
  const firstWarn = lineWhere((record) => record.level === "warn");
  const make = (bindings: object): Logger => {
    const log =
      (level: LogRecord["level"]) =>
      (obj: object, msg?: string): void => {
        const record = { level, obj: { ...bindings, ...obj } as Record<string, unknown>, msg };
        records.push(record);
        for (const waiter of [...waiters]) {
          if (!waiter.matches(record)) continue;
          waiters.delete(waiter);
          waiter.resolve(record);
        }
      };
    return {
      debug: log("debug"),
      info: log("info"),
      warn: log("warn"),
      error: log("error"),
      child: (more) => make({ ...bindings, ...more }),
    };
  };
  return Object.assign(make({}), { records, firstWarn, lineWhere });
}

const runtimes: DistributedRuntime[] = [];
const servers: (EtcdServer | NatsServer)[] = [];

afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((runtime) => runtime.shutdown({ graceMs: 0 })));
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

async function keep(creating: Promise<DistributedRuntime>, timeoutMs = 20_000): Promise<DistributedRuntime> {
  const runtime = await within("runtime create", creating, timeoutMs);
  runtimes.push(runtime);
  return runtime;
}

describe("runtime - waiting for etcd and NATS", () => {
  it("runtime - create waits for an etcd that starts after it, logging the wait", async () => {
    const clientPort = await freePort();
    const endpoint = `http://127.0.0.1:${clientPort}`;
    const logger = recordingLogger();
    const creating = DistributedRuntime.create({
      env: {},
      name: "worker-1",
      discovery: { kind: "etcd", endpoints: [endpoint] },
      startupTimeoutMs: 20_000,
      logger,
    });
    creating.catch(() => {});
    const warn = await within("the first 'waiting for etcd' line", logger.firstWarn);
    expect(warn.msg).toContain(`waiting for etcd at ${endpoint}`);
    expect(warn.obj.runtime).toBe("worker-1");
    // Still trying after several backoffs (about 0.7 s in): etcd starts late, not at once.
    await within(
      "the fourth attempt",
      logger.lineWhere((record) => record.level === "warn" && record.obj.attempt === 4),
    );
    servers.push(await within("etcd start", startEtcd({ clientPort }), 30_000));
    const runtime = await keep(creating);
    expect(runtime.state).toBe("running");
    const served = await within(
      "serve",
      runtime
        .namespace("tdist")
        .component("backend")
        .endpoint("generate")
        .serve(async function* () {
          yield "ok";
        }),
    );
    expect(await within("list", runtime.discovery.list("v1/instances/"))).toHaveLength(1);
    expect(served.instanceId).toBe(runtime.instanceId);
    expect(logger.records.filter((r) => r.level === "warn").length).toBeLessThanOrEqual(6);
    expect(logger.records.some((r) => r.level === "info" && r.msg?.startsWith(`etcd at ${endpoint} is up after`))).toBe(
      true,
    );
  });

  it("runtime - create waits for a NATS request plane that starts after it; the event plane then works", async () => {
    const port = await freePort();
    const url = `nats://127.0.0.1:${port}`;
    const logger = recordingLogger();
    const creating = DistributedRuntime.create({
      env: {},
      discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
      requestPlane: { kind: "nats", url },
      eventPlane: { kind: "nats", url },
      startupTimeoutMs: 20_000,
      logger,
    });
    creating.catch(() => {});
    const warn = await within("the first 'waiting for NATS' line", logger.firstWarn);
    expect(warn.msg).toContain(`waiting for NATS at ${url}`);
    servers.push(await within("nats start", startNats({ port }), 30_000));
    const runtime = await keep(creating);
    const plane = await within("event plane", runtime.eventPlane());
    const subscription = plane.subscribe<string>("startup.check");
    await within("subscription ready", subscription.ready);
    await within("publish", plane.publish("startup.check", "hello"));
    const first = await within("event", subscription[Symbol.asyncIterator]().next());
    expect(first.value?.payload).toBe("hello");
  });

  it("runtime - with no etcd ever started, create fails after the deadline with dependency_unavailable", async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const startedAt = Date.now();
    const err = await within(
      "create",
      DistributedRuntime.create({
        env: {},
        discovery: { kind: "etcd", endpoints: [endpoint] },
        startupTimeoutMs: 1_000,
      }).catch((e: unknown) => e),
    );
    const elapsedMs = Date.now() - startedAt;
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
    const message = (err as Error).message;
    expect(message).toContain(endpoint);
    expect(message).toMatch(/waited \d+\.\d s/);
    expect(Number(/waited (\d+\.\d) s/.exec(message)?.[1]) * 1000).toBeGreaterThanOrEqual(1_000);
    expect(message).not.toContain("Resolution note");
  });

  it("runtime - with no NATS ever started, create fails after the deadline with dependency_unavailable", async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    const startedAt = Date.now();
    const err = await within(
      "create",
      DistributedRuntime.create({
        env: {},
        discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
        requestPlane: { kind: "nats", url },
        startupTimeoutMs: 1_000,
      }).catch((e: unknown) => e),
    );
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_000);
    expect((err as Error).message).toContain(url);
  });

  it("runtime - TDIST_STARTUP_TIMEOUT_MS bounds the wait when no option is given", async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const startedAt = Date.now();
    const err = await within(
      "create",
      DistributedRuntime.create({
        env: { TDIST_DISCOVERY: "etcd", TDIST_ETCD_ENDPOINTS: endpoint, TDIST_STARTUP_TIMEOUT_MS: "700" },
      }).catch((e: unknown) => e),
    );
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(700);
  });

  it("runtime - the create signal cancels the wait for etcd", async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const logger = recordingLogger();
    const controller = new AbortController();
    const creating = DistributedRuntime.create({
      env: {},
      discovery: { kind: "etcd", endpoints: [endpoint] },
      startupTimeoutMs: 60_000,
      logger,
      signal: controller.signal,
    }).catch((e: unknown) => e);
    await within("the first warn line", logger.firstWarn);
    const abortedAt = Date.now();
    controller.abort();
    const err = await within("create", creating, 5_000);
    expect(TdistError.is(err, "cancelled")).toBe(true);
    expect(Date.now() - abortedAt).toBeLessThan(1_000);
  });

  it("runtime - shutdown cancels an event plane still waiting for NATS", async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    const logger = recordingLogger();
    const runtime = await keep(
      DistributedRuntime.create({
        env: {},
        discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
        eventPlane: { kind: "nats", url },
        startupTimeoutMs: 60_000,
        logger,
      }),
    );
    const opening = runtime.eventPlane().catch((e: unknown) => e);
    await within("the first warn line", logger.firstWarn);
    const stoppedAt = Date.now();
    await within("shutdown", runtime.shutdown({ graceMs: 0 }), 5_000);
    expect(Date.now() - stoppedAt).toBeLessThan(2_000);
    expect(TdistError.is(await within("event plane", opening), "shutting_down")).toBe(true);
  });
});
