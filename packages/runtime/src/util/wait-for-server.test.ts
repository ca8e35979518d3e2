import { describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import { causeText, waitForServer } from "./wait-for-server.js";

interface LogRecord {
  level: "debug" | "info" | "warn" | "error";
  obj: Record<string, unknown>;
  msg: string | undefined;
}

function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const log =
    (level: LogRecord["level"]) =>
    (obj: object, msg?: string): void => {
      records.push({ level, obj: obj as Record<string, unknown>, msg });
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

const refused = (): Promise<never> => Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:4222"));

describe("wait for server", () => {
  it("wait for server - retries until an attempt succeeds, logging the wait and the recovery", async () => {
    const logger = recordingLogger();
    let attempts = 0;
    const value = await waitForServer({
      server: "etcd",
      endpoints: ["http://127.0.0.1:2379"],
      timeoutMs: 5_000,
      logger,
      attempt: async () => {
        attempts++;
        if (attempts < 4) throw new Error("connect ECONNREFUSED 127.0.0.1:2379");
        return "connected";
      },
    });
    expect(value).toBe("connected");
    expect(attempts).toBe(4);
    const warns = logger.records.filter((r) => r.level === "warn");
    expect(warns.map((r) => r.obj.attempt)).toEqual([1, 2]);
    expect(warns[0]?.msg).toMatch(/^waiting for etcd at http:\/\/127\.0\.0\.1:2379 \(attempt 1, 0\.\d s of 5\.0 s\)$/);
    expect(warns[0]?.obj.cause).toBe("connect ECONNREFUSED 127.0.0.1:2379");
    const up = logger.records.filter((r) => r.level === "info");
    expect(up).toHaveLength(1);
    expect(up[0]?.obj.attempt).toBe(4);
  });

  it("wait for server - gives up after the deadline with dependency_unavailable, the time waited and the cause", async () => {
    const logger = recordingLogger();
    let attempts = 0;
    const startedAt = Date.now();
    const err = await waitForServer({
      server: "NATS",
      endpoints: ["nats://127.0.0.1:4222"],
      timeoutMs: 1_500,
      logger,
      attempt: () => {
        attempts++;
        return refused();
      },
    }).catch((e: unknown) => e);
    const elapsedMs = Date.now() - startedAt;
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect((err as TdistError).category).toBe("cannot_connect");
    expect(elapsedMs).toBeGreaterThanOrEqual(1_500);
    expect(elapsedMs).toBeLessThan(3_000);
    const message = (err as Error).message;
    expect(message).toContain("nats://127.0.0.1:4222");
    expect(message).toMatch(/waited 1\.[5-9] s/);
    expect(message).toContain("connect ECONNREFUSED 127.0.0.1:4222");
    // Backoff, not a busy loop; a warn line per doubling of the attempt count, not per attempt.
    expect(attempts).toBeGreaterThanOrEqual(3);
    expect(attempts).toBeLessThanOrEqual(8);
    const warns = logger.records.filter((r) => r.level === "warn").length;
    expect(warns).toBe(Math.floor(Math.log2(attempts - 1)) + 1);
  });

  it("wait for server - an attempt that hangs is bounded by the deadline", async () => {
    const startedAt = Date.now();
    const err = await waitForServer({
      server: "etcd",
      endpoints: ["http://10.255.255.1:2379"],
      timeoutMs: 500,
      logger: recordingLogger(),
      attempt: () => new Promise<never>(() => {}),
    }).catch((e: unknown) => e);
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(500);
    expect(Date.now() - startedAt).toBeLessThan(2_000);
  });

  it("wait for server - a last attempt cut short by the deadline does not hide the refusal before it", async () => {
    let attempts = 0;
    const err = await waitForServer({
      server: "etcd",
      endpoints: ["http://127.0.0.1:2379"],
      timeoutMs: 400,
      logger: recordingLogger(),
      attempt: () => {
        attempts++;
        return attempts === 1 ? refused() : new Promise<never>(() => {});
      },
    }).catch((e: unknown) => e);
    expect(TdistError.is(err, "dependency_unavailable")).toBe(true);
    expect((err as Error).message).toContain("connect ECONNREFUSED 127.0.0.1:4222");
  });

  it("wait for server - the signal cancels the wait at once and a late connection is discarded", async () => {
    const controller = new AbortController();
    const discarded: string[] = [];
    let finishAttempt: (value: string) => void = () => {};
    let attempts = 0;
    const waiting = waitForServer({
      server: "NATS",
      endpoints: ["nats://127.0.0.1:4222"],
      timeoutMs: 60_000,
      signal: controller.signal,
      logger: recordingLogger(),
      attempt: () => {
        attempts++;
        if (attempts === 1) return refused();
        return new Promise<string>((resolve) => {
          finishAttempt = resolve;
          controller.abort();
        });
      },
      discard: (late) => discarded.push(late),
    }).catch((e: unknown) => e);
    const startedAt = Date.now();
    const err = await waiting;
    expect(Date.now() - startedAt).toBeLessThan(1_000);
    expect(TdistError.is(err, "cancelled")).toBe(true);
    finishAttempt("late connection");
    await Promise.resolve();
    await Promise.resolve();
    expect(discarded).toEqual(["late connection"]);
  });

  it("wait for server - a permanent failure is thrown at once", async () => {
    let attempts = 0;
    const permanent = new TdistError("invalid_option", "bad credentials");
    const err = await waitForServer({
      server: "NATS",
      endpoints: ["nats://127.0.0.1:4222"],
      timeoutMs: 10_000,
      logger: recordingLogger(),
      attempt: () => {
        attempts++;
        return Promise.reject(permanent);
      },
      isPermanent: (e) => e === permanent,
    }).catch((e: unknown) => e);
    expect(err).toBe(permanent);
    expect(attempts).toBe(1);
  });

  it("wait for server - cause text drops grpc-js's preamble and its empty resolution note", () => {
    const grpc = new Error(
      "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ",
    );
    expect(causeText(grpc)).toBe("connect ECONNREFUSED 127.0.0.1:1");
    const nats = new Error("connection refused", { cause: new Error("connect ECONNREFUSED 127.0.0.1:4222") });
    expect(causeText(nats)).toBe("connection refused (connect ECONNREFUSED 127.0.0.1:4222)");
    expect(causeText(new Error("14 UNAVAILABLE: Name resolution failed. Resolution note: dns says no"))).toBe(
      "14 UNAVAILABLE: Name resolution failed. Resolution note: dns says no",
    );
  });
});
