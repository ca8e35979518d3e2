import { afterEach, describe, expect, it } from "vitest";
import { MemoryDiscoveryStore } from "./discovery/memory-discovery.js";
import { TdistError } from "./errors/tdist-error.js";
import type { Logger } from "./logger.js";
import { DistributedRuntime } from "./runtime.js";
import { wordsHandler } from "./testing/request-plane-suite.js";

describe("runtime - lifecycle", () => {
  let runtime: DistributedRuntime | undefined;
  afterEach(async () => {
    await runtime?.shutdown({ graceMs: 100 });
  });

  const create = async () => {
    runtime = await DistributedRuntime.create({
      env: {},
      discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
    });
    return runtime;
  };

  it("runtime - moves through running, draining and stopped", async () => {
    const rt = await create();
    expect(rt.state).toBe("running");
    const done = rt.shutdown();
    expect(rt.state).toBe("draining");
    await done;
    expect(rt.state).toBe("stopped");
  });

  it("runtime - await using shuts the runtime down", async () => {
    let captured: DistributedRuntime | undefined;
    {
      await using rt = await DistributedRuntime.create({
        env: {},
        discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
      });
      captured = rt;
    }
    expect(captured.state).toBe("stopped");
  });

  it("runtime - registers instances under its lease id as lower-case hex", async () => {
    const rt = await create();
    const served = await rt.namespace("ns").component("comp").endpoint("ep").serve(wordsHandler);
    expect(served.instanceId).toMatch(/^[0-9a-f]+$/);
    const keys = (await rt.discovery.list("v1/instances/")).map((kv) => kv.key);
    expect(keys).toEqual([`v1/instances/ns/comp/ep/${served.instanceId}`]);
  });

  it("runtime - serving one endpoint twice is already_serving; serving after shutdown is shutting_down", async () => {
    const rt = await create();
    const endpoint = rt.namespace("ns").component("comp").endpoint("ep");
    await endpoint.serve(wordsHandler);
    await expect(endpoint.serve(wordsHandler)).rejects.toMatchObject({ code: "already_serving" });
    await rt.shutdown();
    await expect(endpoint.serve(wordsHandler)).rejects.toSatisfy((err) => TdistError.is(err, "shutting_down"));
  });

  it("runtime - invalid names and options are typed errors", async () => {
    const rt = await create();
    expect(() => rt.namespace("Bad Name")).toThrowError(/invalid namespace name/);
    await expect(DistributedRuntime.create({ env: {}, streamWindow: 0 })).rejects.toMatchObject({
      code: "invalid_option",
    });
    await expect(DistributedRuntime.create({ env: { TDIST_REQUEST_PLANE: "carrier-pigeon" } })).rejects.toMatchObject({
      code: "invalid_option",
    });
  });

  it("runtime - a stopped endpoint leaves discovery but the runtime keeps serving others", async () => {
    const rt = await create();
    const a = await rt.namespace("ns").component("comp").endpoint("a").serve(wordsHandler);
    await rt.namespace("ns").component("comp").endpoint("b").serve(wordsHandler);
    await a.stop();
    const keys = (await rt.discovery.list("v1/instances/")).map((kv) => kv.key.split("/")[4]);
    expect(keys).toEqual(["b"]);
  });
});

describe("runtime - event plane and work queues", () => {
  it("runtime - memory event plane and work queues are shared by runtimes given the same bus", async () => {
    const { MemoryEventBus } = await import("./event-plane/memory-event-plane.js");
    const { MemoryWorkQueueBroker } = await import("./work-queue/memory-work-queue.js");
    const bus = new MemoryEventBus();
    const broker = new MemoryWorkQueueBroker();
    const store = new MemoryDiscoveryStore();
    const make = () =>
      DistributedRuntime.create({
        env: {},
        discovery: { kind: "memory", store },
        eventPlane: { kind: "memory", bus, broker },
      });
    const [a, b] = await Promise.all([make(), make()]);
    try {
      const subscription = (await b.eventPlane()).subscribe<{ n: number }>("tdist.ns.test.x.events");
      await subscription.ready;
      await (await a.eventPlane()).publish("tdist.ns.test.x.events", { n: 1 });
      const first = await subscription[Symbol.asyncIterator]().next();
      expect(first.value?.payload).toEqual({ n: 1 });
      const queueA = await (await a.workQueues()).open<string>("jobs");
      const queueB = await (await b.workQueues()).open<string>("jobs");
      await queueA.enqueue("job-1");
      const item = await queueB.dequeue({ timeoutMs: 1_000 });
      expect(item?.payload).toBe("job-1");
      await item?.ack();
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });
});

describe("runtime - name", () => {
  interface Line {
    level: string;
    obj: Record<string, unknown>;
    msg: string | undefined;
  }
  /** A logger whose children merge their bindings into each line, as pino's do. */
  function recordingLogger(lines: Line[], bindings: object = {}): Logger {
    const log =
      (level: string) =>
      (obj: object, msg?: string): void => {
        lines.push({ level, obj: { ...bindings, ...obj } as Record<string, unknown>, msg });
      };
    return {
      debug: log("debug"),
      info: log("info"),
      warn: log("warn"),
      error: log("error"),
      child: (more) => recordingLogger(lines, { ...bindings, ...more }),
    };
  }

  it("runtime - every line the runtime logs carries its name", async () => {
    const lines: Line[] = [];
    const rt = await DistributedRuntime.create({
      env: {},
      name: "worker-1",
      discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
      logger: recordingLogger(lines),
    });
    expect(rt.name).toBe("worker-1");
    await rt
      .namespace("tdist")
      .component("backend")
      .endpoint("generate")
      .serve(async function* () {
        yield "ok";
      });
    await rt.shutdown({ graceMs: 0 });
    expect(lines.map((line) => line.msg)).toEqual(expect.arrayContaining(["serving endpoint", "runtime stopped"]));
    for (const line of lines) expect(line.obj.runtime).toBe("worker-1");
  });

  it("runtime - two runtimes get distinct default names", async () => {
    const store = new MemoryDiscoveryStore();
    const first = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    const second = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    try {
      expect(first.name).toMatch(/^rt-[0-9a-f]{6}$/);
      expect(second.name).not.toBe(first.name);
    } finally {
      await Promise.all([first.shutdown({ graceMs: 0 }), second.shutdown({ graceMs: 0 })]);
    }
  });

  it("runtime - a logger without child still gets the name in its lines", async () => {
    const lines: Line[] = [];
    const { child: _child, ...withoutChild } = recordingLogger(lines);
    const rt = await DistributedRuntime.create({
      env: {},
      name: "frontend",
      discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
      logger: withoutChild as unknown as Logger,
    });
    await rt.shutdown({ graceMs: 0 });
    expect(lines.find((line) => line.msg === "runtime stopped")?.obj.runtime).toBe("frontend");
  });

  it("runtime - a blank or overlong name is refused with invalid_option", async () => {
    for (const name of ["", "  ", "x".repeat(65)]) {
      const err = await DistributedRuntime.create({ env: {}, name }).catch((e: unknown) => e);
      expect(TdistError.is(err, "invalid_option")).toBe(true);
    }
  });
});
