import { createServer } from "node:net";
import { type InProcessCluster, type NatsServer, startInProcessCluster, startNats } from "@tdist/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MemoryDiscoveryStore } from "../discovery/memory-discovery.js";
import type { Handler, StreamOutcome } from "../handler.js";
import { instanceSubject } from "../request-plane/nats-wire.js";
import type { TransportAddress } from "../request-plane/request-plane.js";
import { DistributedRuntime } from "../runtime.js";
import type { RuntimeOptions } from "../runtime-options.js";
import { collect, expectError } from "../testing/request-plane-suite.js";
import { delay, withTimeout } from "../util/abort.js";
import type { Client } from "./client.js";
import type { Instance } from "./instance.js";
import type { Route } from "./route.js";
import type { PickContext, RouterPolicy } from "./router-policy.js";

/** What a recording policy saw happen to its routes, in order. */
interface Recording {
  readonly events: string[];
  readonly outcomes: StreamOutcome[];
  readonly contexts: PickContext[];
  readonly offered: string[][];
  /** Resolves with the next release's outcome. */
  nextRelease(): Promise<StreamOutcome>;
}

/**
 * Routes to the first instance offered (or to `target`, a made-up instance)
 * and records every hook call.
 */
function recordingPolicy(target?: Instance): { policy: RouterPolicy; recording: Recording } {
  const events: string[] = [];
  const outcomes: StreamOutcome[] = [];
  const contexts: PickContext[] = [];
  const offered: string[][] = [];
  const waiters: Array<(outcome: StreamOutcome) => void> = [];
  let picks = 0;
  const policy: RouterPolicy = {
    name: "recording",
    pick(instances, context) {
      contexts.push(context);
      offered.push(instances.map((instance) => instance.instanceId));
      const instance = target ?? instances[0];
      if (instance === undefined) return undefined;
      const n = ++picks;
      const route: Route = {
        instance,
        decision: { pick: n },
        onFirstResponse: () => events.push(`first ${n}`),
        release: (outcome) => {
          events.push(`release ${n} ${outcome.status}`);
          outcomes.push(outcome);
          waiters.shift()?.(outcome);
        },
      };
      return route;
    },
  };
  const nextRelease = (): Promise<StreamOutcome> =>
    withTimeout("route release", 5_000, undefined, () => new Promise<StreamOutcome>((r) => waiters.push(r)));
  return { policy, recording: { events, outcomes, contexts, offered, nextRelease } };
}

interface Words {
  words?: number;
  fail?: "before" | "after";
  delayMs?: number;
}

const words: Handler<Words, string> = async function* (request, ctx) {
  if (request.fail === "before") throw new Error("handler broke before any output");
  for (let i = 0; i < (request.words ?? 3); i++) {
    if (request.delayMs) await delay(request.delayMs, ctx.signal);
    yield `w${i}`;
  }
  if (request.fail === "after") throw new Error("handler broke after output");
};

interface Plane {
  /** A client of `servers` instances serving `words`, reached over the plane under test. */
  setup(servers: number): Promise<Client<Words, string>>;
  /** An address nothing answers on; undefined for the local plane, which always reaches its handler. */
  unreachable(): Promise<TransportAddress> | undefined;
  teardown(): Promise<void>;
}

function clusterPlane(options: () => RuntimeOptions, unreachable: () => Promise<TransportAddress>): Plane {
  let cluster: InProcessCluster | undefined;
  return {
    async setup(servers) {
      cluster = await startInProcessCluster(0, options());
      for (let i = 0; i < servers; i++) {
        const runtime = await cluster.add();
        await runtime
          .namespace("test")
          .component("words")
          .endpoint("generate")
          .serve(words as Handler);
      }
      const caller = await cluster.add();
      const client = await caller.namespace("test").component("words").endpoint("generate").client<Words, string>();
      await client.waitForInstances({ count: servers, timeoutMs: 5_000 });
      return client;
    },
    unreachable,
    async teardown() {
      await cluster?.shutdown();
      cluster = undefined;
    },
  };
}

function localPlane(): Plane {
  let runtime: DistributedRuntime | undefined;
  return {
    async setup() {
      runtime = await DistributedRuntime.create({
        env: {},
        discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
      });
      const endpoint = runtime.namespace("test").component("words").endpoint("generate");
      await endpoint.serve(words as Handler);
      const client = await endpoint.client<Words, string>();
      await client.waitForInstances({ timeoutMs: 2_000 });
      return client;
    },
    unreachable: () => undefined,
    async teardown() {
      await runtime?.shutdown({ graceMs: 200 });
      runtime = undefined;
    },
  };
}

/** A TCP port that was just free and is closed again: connecting to it is refused. */
async function closedTcpAddress(): Promise<TransportAddress> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return { tcp: `127.0.0.1:${port}` };
}

let nats: NatsServer | undefined;

const planes: Array<[string, () => Plane]> = [
  ["local", localPlane],
  ["tcp", () => clusterPlane(() => ({ requestPlane: { kind: "tcp", host: "127.0.0.1" } }), closedTcpAddress)],
  [
    "nats",
    () =>
      clusterPlane(
        () => ({ requestPlane: { kind: "nats", url: (nats as NatsServer).url } }),
        async () => ({ nats: instanceSubject("deadbeef") }),
      ),
  ],
];

beforeAll(async () => {
  nats = await startNats({ jetstream: false });
});

afterAll(async () => {
  await nats?.stop();
});

describe.each(planes)("client routes (%s)", (planeName, makePlane) => {
  const plane = makePlane();

  afterEach(async () => {
    await plane.teardown();
  });

  it(`client routes - ${planeName}: a completed stream sees first response, then one release, and carries its route`, async () => {
    const client = await plane.setup(1);
    const { policy, recording } = recordingPolicy();
    const stream = client.generate({ words: 3 }, { router: policy });
    expect(stream.route?.decision).toEqual({ pick: 1 });
    expect(stream.route?.instance.instanceId).toBe(stream.instanceId);
    const released = recording.nextRelease();
    expect(await collect(stream)).toEqual(["w0", "w1", "w2"]);
    expect((await released).status).toBe("completed");
    stream.kill();
    await stream.return?.();
    expect(recording.events).toEqual(["first 1", "release 1 completed"]);
    expect(client.inFlight(stream.instanceId)).toBe(0);
  });

  it(`client routes - ${planeName}: a handler error releases once as failed`, async () => {
    const client = await plane.setup(1);
    const { policy, recording } = recordingPolicy();
    const released = recording.nextRelease();
    await expectError(collect(client.generate({ words: 1, fail: "after" }, { router: policy })), "remote_handler");
    const outcome = await released;
    expect(outcome.status).toBe("failed");
    expect(outcome.status === "failed" ? outcome.error.code : undefined).toBe("remote_handler");
    expect(recording.events).toEqual(["first 1", "release 1 failed"]);
  });

  it(`client routes - ${planeName}: an error before any output releases without a first response`, async () => {
    const client = await plane.setup(1);
    const { policy, recording } = recordingPolicy();
    const released = recording.nextRelease();
    await expectError(collect(client.generate({ fail: "before" }, { router: policy })), "remote_handler");
    await released;
    expect(recording.events).toEqual(["release 1 failed"]);
  });

  it(`client routes - ${planeName}: break in for-await releases once as cancelled`, async () => {
    const client = await plane.setup(1);
    const { policy, recording } = recordingPolicy();
    const released = recording.nextRelease();
    const stream = client.generate({ words: 1_000, delayMs: 1 }, { router: policy });
    for await (const item of stream) if (item === "w2") break;
    expect(await released).toEqual({ status: "cancelled" });
    stream.kill();
    expect(recording.events).toEqual(["first 1", "release 1 cancelled"]);
    expect(client.inFlight(stream.instanceId)).toBe(0);
  });

  it(`client routes - ${planeName}: an aborted signal and a timeout release once as cancelled`, async () => {
    const client = await plane.setup(1);
    const { policy, recording } = recordingPolicy();
    const controller = new AbortController();
    const aborted = recording.nextRelease();
    const stream = client.generate({ words: 1_000, delayMs: 1 }, { router: policy, signal: controller.signal });
    expect((await withTimeout("first item", 5_000, undefined, () => stream.next())).value).toBe("w0");
    controller.abort();
    expect((await aborted).status).toBe("cancelled");
    await expectError(stream.next(), "cancelled");

    const timedOut = recording.nextRelease();
    await expectError(
      collect(client.generate({ words: 1, delayMs: 10_000 }, { router: policy, timeoutMs: 50 })),
      "timeout",
    );
    const outcome = await timedOut;
    expect(outcome.status).toBe("cancelled");
    expect(outcome.status === "cancelled" ? outcome.error?.code : undefined).toBe("timeout");
    expect(recording.events).toEqual(["first 1", "release 1 cancelled", "release 2 cancelled"]);
  });

  it(`client routes - ${planeName}: a request already cancelled releases once without connecting`, async () => {
    const client = await plane.setup(1);
    const { policy, recording } = recordingPolicy();
    const released = recording.nextRelease();
    const stream = client.generate({ words: 3 }, { router: policy, signal: AbortSignal.abort() });
    expect((await released).status).toBe("cancelled");
    await expectError(stream.next(), "cancelled");
    expect(recording.events).toEqual(["release 1 cancelled"]);
  });

  it(`client routes - ${planeName}: an unreachable instance releases once as failed with cannot_connect`, async () => {
    const address = plane.unreachable();
    if (address === undefined) return;
    const client = await plane.setup(1);
    const [real] = client.instances();
    const { policy, recording } = recordingPolicy({
      ...(real as Instance),
      instanceId: "0bad",
      transport: await address,
    });
    const released = recording.nextRelease();
    const stream = client.generate({ words: 3 }, { router: policy });
    await expectError(collect(stream), "cannot_connect");
    const outcome = await released;
    expect(outcome.status === "failed" ? outcome.error.code : outcome.status).toBe("cannot_connect");
    expect(recording.events).toEqual(["release 1 failed"]);
    expect(stream.route?.instance.instanceId).toBe("0bad");
  });
});

describe("client routes - picking", () => {
  const plane = clusterPlane(() => ({ requestPlane: { kind: "tcp", host: "127.0.0.1" } }), closedTcpAddress);

  afterEach(async () => {
    await plane.teardown();
  });

  it("client routes - excluded instances are never offered and the policy sees the set", async () => {
    const client = await plane.setup(2);
    const [first, second] = client.instances().map((instance) => instance.instanceId) as [string, string];
    const { policy, recording } = recordingPolicy();
    for (let i = 0; i < 4; i++) {
      const stream = client.generate({ words: 1 }, { router: policy, exclude: [first] });
      await collect(stream);
      expect(stream.instanceId).toBe(second);
    }
    expect(recording.offered).toEqual(Array.from({ length: 4 }, () => [second]));
    expect([...(recording.contexts[0]?.exclude ?? [])]).toEqual([first]);
    await collect(client.generate({ words: 1 }, { router: policy }));
    expect(recording.offered.at(-1)).toEqual([first, second]);
    expect(recording.contexts.at(-1)?.exclude.size).toBe(0);
  });

  it("client routes - excluding every instance, or a policy that picks none, is no_instances", async () => {
    const client = await plane.setup(2);
    const ids = client.instances().map((instance) => instance.instanceId);
    const { policy, recording } = recordingPolicy();
    const stream = client.generate({ words: 1 }, { router: policy, exclude: new Set(ids) });
    expect(stream.route).toBeUndefined();
    await expectError(collect(stream), "no_instances");
    expect(recording.offered).toEqual([[]]);
    const none: RouterPolicy = { name: "none", pick: () => undefined };
    await expectError(collect(client.generate({ words: 1 }, { router: none })), "no_instances");
    expect(recording.events).toEqual([]);
  });

  it("client routes - a route whose hooks throw still ends the stream and frees the instance", async () => {
    const client = await plane.setup(1);
    const [instance] = client.instances() as [Instance];
    const throwing: RouterPolicy = {
      name: "throwing",
      pick: () => ({
        instance,
        onFirstResponse: () => {
          throw new Error("policy bug");
        },
        release: () => {
          throw new Error("policy bug");
        },
      }),
    };
    expect(await collect(client.generate({ words: 2 }, { router: throwing }))).toEqual(["w0", "w1"]);
    expect(client.inFlight(instance.instanceId)).toBe(0);
  });
});
