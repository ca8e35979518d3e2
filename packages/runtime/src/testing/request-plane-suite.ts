import { type InProcessCluster, startInProcessCluster } from "@tdist/testkit";
import { afterEach, describe, expect, it } from "vitest";
import type { Client } from "../client/client.js";
import { direct } from "../client/router-policy.js";
import { Context } from "../context.js";
import { TdistError } from "../errors/tdist-error.js";
import type { Handler } from "../handler.js";
import type { DistributedRuntime } from "../runtime.js";
import type { RuntimeOptions } from "../runtime-options.js";
import { delay, withTimeout } from "../util/abort.js";

export interface WordsRequest {
  text: string;
  delayMs?: number;
}

/** Streams the words of `text`, optionally pausing between them. */
export const wordsHandler: Handler<WordsRequest, string> = async function* (request, ctx) {
  for (const word of request.text.split(" ")) {
    if (ctx.isStopped) return;
    if (request.delayMs) await delay(request.delayMs, ctx.signal);
    yield word;
  }
};

export async function collect<T>(stream: AsyncIterable<T>, timeoutMs = 5_000): Promise<T[]> {
  return withTimeout("collect", timeoutMs, undefined, async () => {
    const out: T[] = [];
    for await (const item of stream) out.push(item);
    return out;
  });
}

export async function expectError(promise: Promise<unknown>, code: string): Promise<TdistError> {
  try {
    await withTimeout("expected error", 5_000, undefined, () => promise);
  } catch (err) {
    expect(err).toBeInstanceOf(TdistError);
    expect((err as TdistError).code).toBe(code);
    return err as TdistError;
  }
  throw new Error(`expected a ${code} error, got success`);
}

/** A deferred that a test can await with a bound. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/**
 * The behaviour every request plane must have, run against each plane
 * (`tcp`, `nats`) with the same assertions. Servers and the caller live in
 * separate runtimes, so requests cross the plane rather than the local path.
 */
export function describeRequestPlaneSuite(planeName: string, runtimeOptions: () => RuntimeOptions): void {
  describe(`request plane (${planeName})`, () => {
    let cluster: InProcessCluster | undefined;

    afterEach(async () => {
      await cluster?.shutdown();
      cluster = undefined;
    });

    async function setup(
      servers: number,
      handler: Handler<never, unknown> = wordsHandler as Handler<never, unknown>,
      extra: RuntimeOptions = {},
    ): Promise<{ servers: DistributedRuntime[]; caller: DistributedRuntime; client: Client<unknown, unknown> }> {
      cluster = await startInProcessCluster(0, { ...runtimeOptions(), ...extra });
      const serverRuntimes: DistributedRuntime[] = [];
      for (let i = 0; i < servers; i++) {
        const runtime = await cluster.add();
        await runtime
          .namespace("test")
          .component("words")
          .endpoint("generate")
          .serve(handler as Handler);
        serverRuntimes.push(runtime);
      }
      const caller = await cluster.add();
      const client = await caller.namespace("test").component("words").endpoint("generate").client();
      await client.waitForInstances({ count: servers, timeoutMs: 5_000 });
      return { servers: serverRuntimes, caller, client };
    }

    it(`${planeName} - streams responses in order between runtimes`, async () => {
      const { client } = await setup(1);
      expect(await collect(client.generate({ text: "hello distributed world" }))).toEqual([
        "hello",
        "distributed",
        "world",
      ]);
    });

    it(`${planeName} - round-robin order is exact across three instances`, async () => {
      const { servers, client } = await setup(3);
      const ids = servers.map((runtime) => runtime.instanceId as string).sort(byHexId);
      const seen: string[] = [];
      for (let i = 0; i < 9; i++) {
        const stream = client.generate({ text: "x" });
        await collect(stream);
        seen.push(stream.instanceId);
      }
      const offset = ids.indexOf(seen[0] as string);
      expect(offset).toBeGreaterThanOrEqual(0);
      expect(seen).toEqual(Array.from({ length: 9 }, (_, i) => ids[(offset + i) % 3]));
    });

    it(`${planeName} - direct routing hits the named instance; an unknown id is instance_not_found`, async () => {
      const { servers, client } = await setup(3);
      const target = servers[1]?.instanceId as string;
      for (let i = 0; i < 5; i++) {
        const stream = client.generate({ text: "a b" }, { router: direct(target) });
        expect(await collect(stream)).toEqual(["a", "b"]);
        expect(stream.instanceId).toBe(target);
      }
      await expectError(collect(client.generate({ text: "a" }, { router: direct("deadbeef") })), "instance_not_found");
    });

    it(`${planeName} - break in for-await reaches the handler's finally within 100 ms`, async () => {
      const finallyRan = deferred<number>();
      const endless: Handler<unknown, number> = async function* () {
        try {
          for (let i = 0; ; i++) {
            await delay(2);
            yield i;
          }
        } finally {
          finallyRan.resolve(performance.now());
        }
      };
      const { client } = await setup(1, endless);
      let brokeAt = 0;
      for await (const value of client.generate({})) {
        if ((value as number) >= 3) {
          brokeAt = performance.now();
          break;
        }
      }
      const ranAt = await withTimeout("handler finally", 1_000, undefined, () => finallyRan.promise);
      expect(ranAt - brokeAt).toBeLessThan(100);
    });

    it(`${planeName} - handler errors arrive typed and the process keeps serving`, async () => {
      const failing: Handler<{ fail: boolean }, string> = async function* (request) {
        yield "first";
        if (request.fail) throw new Error("engine exploded");
        yield "second";
      };
      const { client } = await setup(1, failing as Handler<never, unknown>);
      const received: unknown[] = [];
      const error = await expectError(
        (async () => {
          for await (const item of client.generate({ fail: true })) received.push(item);
        })(),
        "remote_handler",
      );
      expect(error.category).toBe("remote_handler");
      expect(error.message).toContain("engine exploded");
      expect(received).toEqual(["first"]);
      expect(await collect(client.generate({ fail: false }))).toEqual(["first", "second"]);
    });

    it(`${planeName} - stop asks the handler to finish gracefully`, async () => {
      const stoppable: Handler<unknown, string> = async function* (_request, ctx) {
        for (let i = 0; i < 1_000 && !ctx.isStopped; i++) {
          yield `token-${i}`;
          await delay(2);
        }
        yield "stopped-cleanly";
      };
      const { client } = await setup(1, stoppable);
      const stream = client.generate({});
      const received: string[] = [];
      for await (const item of stream) {
        received.push(item as string);
        if (received.length === 3) stream.stop();
      }
      expect(received.at(-1)).toBe("stopped-cleanly");
      expect(received.length).toBeLessThan(100);
    });

    it(`${planeName} - killing a parent context kills its child requests`, async () => {
      const childFinally = deferred();
      const endless: Handler<unknown, number> = async function* (_request, ctx) {
        try {
          for (let i = 0; !ctx.isKilled; i++) {
            await delay(2, ctx.signal).catch(() => {});
            yield i;
          }
        } finally {
          childFinally.resolve();
        }
      };
      const { client } = await setup(1, endless);
      const parent = new Context();
      const stream = client.generate({}, { context: parent });
      const first = await stream.next();
      expect(first.done).toBe(false);
      parent.kill();
      await expectError(
        (async () => {
          for (;;) if ((await stream.next()).done) return;
        })(),
        "cancelled",
      );
      await withTimeout("child finally", 1_000, undefined, () => childFinally.promise);
    });

    it(`${planeName} - shutdown deregisters first and lets in-flight streams finish`, async () => {
      const { servers, client } = await setup(2);
      const [leaving, staying] = servers as [DistributedRuntime, DistributedRuntime];
      const stream = client.generate(
        { text: "one two three four five six", delayMs: 20 },
        { router: direct(leaving.instanceId as string) },
      );
      const first = await stream.next();
      expect(first.value).toBe("one");
      const shutdown = leaving.shutdown({ graceMs: 5_000 });
      await withTimeout("instance removal", 2_000, undefined, async () => {
        while (client.instances().some((i) => i.instanceId === leaving.instanceId)) await delay(5);
      });
      expect(client.instances().map((i) => i.instanceId)).toEqual([staying.instanceId]);
      const rest: unknown[] = [];
      for await (const item of stream) rest.push(item);
      expect(rest).toEqual(["two", "three", "four", "five", "six"]);
      await withTimeout("shutdown", 5_000, undefined, () => shutdown);
      expect(leaving.state).toBe("stopped");
      expect(await collect(client.generate({ text: "still served" }))).toEqual(["still", "served"]);
    });

    it(`${planeName} - a stream killed when the drain grace ends tells its caller shutting_down`, async () => {
      const endless: Handler<unknown, number> = async function* (_request, ctx) {
        for (let i = 0; !ctx.isKilled; i++) {
          yield i;
          await delay(5, ctx.signal).catch(() => {});
        }
      };
      const { servers, client } = await setup(1, endless);
      const stream = client.generate({});
      expect((await stream.next()).done).toBe(false);
      const shutdown = (servers[0] as DistributedRuntime).shutdown({ graceMs: 50 });
      await expectError(
        (async () => {
          for (;;) if ((await stream.next()).done) return;
        })(),
        "shutting_down",
      );
      await withTimeout("shutdown", 5_000, undefined, () => shutdown);
    });

    it(`${planeName} - an oversize response fails that stream alone`, async () => {
      const sized: Handler<{ bytes?: number; words?: string }, string> = async function* (request, ctx) {
        if (request.bytes !== undefined) {
          yield "small";
          yield "x".repeat(request.bytes);
          yield "unreachable";
          return;
        }
        for (const word of (request.words ?? "").split(" ")) {
          await delay(10, ctx.signal);
          yield word;
        }
      };
      const { client } = await setup(1, sized as Handler<never, unknown>, { maxFrameBytes: 64 * 1024 });
      // A stream open on the same connection while the oversize one fails must not notice.
      const neighbour = collect(client.generate({ words: "one two three four five" }));
      const received: unknown[] = [];
      await expectError(
        (async () => {
          for await (const item of client.generate({ bytes: 100_000 })) received.push(item);
        })(),
        "frame_too_large",
      );
      expect(received).toEqual(["small"]);
      expect(await neighbour).toEqual(["one", "two", "three", "four", "five"]);
      expect(await collect(client.generate({ words: "still served" }))).toEqual(["still", "served"]);
    });

    it(`${planeName} - 1000 concurrent streams arrive complete and in order`, async () => {
      const counter: Handler<{ n: number; id: number }, { id: number; i: number }> = async function* (request) {
        for (let i = 0; i < request.n; i++) yield { id: request.id, i };
      };
      const { client } = await setup(1, counter as Handler<never, unknown>);
      const results = await withTimeout("1000 streams", 20_000, undefined, () =>
        Promise.all(
          Array.from({ length: 1_000 }, async (_, id) => {
            const items = (await collect(client.generate({ n: 20, id }), 20_000)) as { id: number; i: number }[];
            return items.every((item, i) => item.id === id && item.i === i) && items.length === 20;
          }),
        ),
      );
      expect(results.every(Boolean)).toBe(true);
    });

    it(`${planeName} - a slow consumer pauses the handler instead of buffering`, async () => {
      let produced = 0;
      const firehose: Handler<unknown, string> = async function* () {
        for (let i = 0; i < 100_000; i++) {
          produced++;
          yield "x".repeat(1024);
        }
      };
      const window = 16;
      const { client } = await setup(1, firehose, { streamWindow: window });
      const stream = client.generate({});
      let consumed = 0;
      for await (const _ of stream) {
        consumed++;
        if (consumed === 50) break;
        if (consumed % 10 === 0) {
          await delay(50);
          // Everything produced is either consumed, in the window, or the one item being sent.
          expect(produced).toBeLessThanOrEqual(consumed + window + 1);
        }
      }
      expect(produced).toBeLessThan(200);
    });

    it(`${planeName} - no live instances is a no_instances error`, async () => {
      cluster = await startInProcessCluster(1, runtimeOptions());
      const client = await cluster.runtimes[0]?.namespace("test").component("nobody").endpoint("generate").client();
      await expectError(collect(client?.generate({}) ?? (async function* () {})()), "no_instances");
    });
  });
}

function byHexId(a: string, b: string): number {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}
