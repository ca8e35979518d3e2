/**
 * Malformed instance records under a served endpoint's prefix, on memory and
 * on etcd discovery: the client's watch never stops, each bad record is
 * skipped with one warning and counted (`malformedRecords`,
 * `onMalformedRecord`), and requests to the valid instance keep succeeding.
 */
import { type EtcdServer, startEtcd, type WarnLine, warnRecorder } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryDiscoveryStore } from "../discovery/memory-discovery.js";
import { DistributedRuntime } from "../runtime.js";
import type { RuntimeOptions } from "../runtime-options.js";
import { collect, type WordsRequest, wordsHandler } from "../testing/request-plane-suite.js";
import { withTimeout } from "../util/abort.js";
import { mulberry32 } from "../util/seeded-random.js";
import { instanceKeyPrefix } from "./instance.js";

const SEED = 0x696e7374;
const PREFIX = instanceKeyPrefix("fuzz", "backend", "generate");
const WARNING = "ignoring malformed instance record";

/** Seeded malformed instance records, each as the key it is put under and its value. */
class MalformedInstanceRecords {
  private serial = 0;

  constructor(private readonly next: () => number) {}

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }

  private freshKey(): string {
    this.serial++;
    return `${PREFIX}${(0xf000 + this.serial).toString(16)}`;
  }

  record(): { key: string; value: string } {
    const key = this.freshKey();
    const valid = { instanceId: "1", transport: { tcp: "127.0.0.1:1" }, metadata: {}, registeredAt: 0 };
    let deep: unknown = {};
    for (let i = 0; i < 3_000; i++) deep = { inner: deep };
    const value = this.pick<() => string>([
      () => "",
      () => "{",
      () => "\u0000\u00ff\ufffd",
      () => "x".repeat(1 << 20),
      () => this.pick(["null", "1", '"text"', "[]", "true", "-0", "1e999"]),
      () => JSON.stringify({ ...valid, instanceId: this.pick<unknown>([undefined, 7, "", null, [], {}]) }),
      () => JSON.stringify({ ...valid, transport: this.pick<unknown>([undefined, null, "tcp", [], 5, {}]) }),
      () =>
        JSON.stringify({
          ...valid,
          transport: this.pick<unknown>([
            { tcp: 5 },
            { tcp: "" },
            { tcp: "no-port" },
            { tcp: "host:port" },
            { tcp: "h:1", nats: "s" },
            { nats: "" },
            { nats: "a b" },
            { nats: "tdist.>" },
            { tcp: `${"h".repeat(5_000)}:1` },
            { udp: "h:1" },
          ]),
        }),
      () => JSON.stringify({ ...valid, metadata: this.pick<unknown>([[], "meta", 5, true]) }),
      () => JSON.stringify({ ...valid, transport: undefined, metadata: deep }),
      () => '{"__proto__":{"polluted":true,"transport":{"tcp":"127.0.0.1:1"}},"instanceId":"1"}',
      () => JSON.stringify({ ...valid, instanceId: "x".repeat(1 << 16), transport: { tcp: Number.NaN } }),
    ])();
    // A valid value under a key no runtime writes: an id that is not a lease id.
    if (this.next() < 0.15) {
      const id = this.pick(["", "zz", "ab/cd", "ABC", "1".repeat(17), "__proto__"]);
      return { key: `${PREFIX}${id}`, value: JSON.stringify(valid) };
    }
    return { key, value };
  }
}

async function fuzzInstances(options: () => RuntimeOptions, rounds: number): Promise<void> {
  const server = await DistributedRuntime.create(options());
  const warnings: WarnLine[] = [];
  const client = await DistributedRuntime.create({ ...options(), logger: warnRecorder(warnings) });
  try {
    const served = await server.namespace("fuzz").component("backend").endpoint("generate").serve(wordsHandler);
    const seen: string[] = [];
    const words = await client
      .namespace("fuzz")
      .component("backend")
      .endpoint("generate")
      .client<WordsRequest, string>({ onMalformedRecord: (key) => seen.push(key) });
    await words.waitForInstances({ timeoutMs: 5_000 });
    const next = mulberry32(SEED);
    const fuzz = new MalformedInstanceRecords(next);
    const puts: string[] = [];
    for (let round = 0; round < rounds; round++) {
      const { key, value } = fuzz.record();
      await withTimeout("put", 5_000, undefined, () => server.discovery.put(key, value));
      puts.push(key);
      if (round % 10 === 0)
        expect(await collect(words.generate({ text: `round ${round}` }))).toEqual(["round", `${round}`]);
    }
    await withTimeout("the watch to see every record", 10_000, undefined, async () => {
      while (words.malformedRecords < puts.length) await new Promise((resolve) => setTimeout(resolve, 5));
    });
    expect(seen).toEqual(puts);
    expect(words.malformedRecords).toBe(puts.length);
    expect(words.instances().map((instance) => instance.instanceId)).toEqual([served.instanceId]);
    expect(await collect(words.generate({ text: "still serving" }))).toEqual(["still", "serving"]);
    const lines = warnings.filter((line) => line.message === WARNING);
    expect(lines).toHaveLength(puts.length);
    for (const line of lines) expect(JSON.stringify(line.fields).length).toBeLessThan(1_000);
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
    await words.close();
  } finally {
    await client.shutdown({ graceMs: 100 });
    await server.shutdown({ graceMs: 100 });
  }
}

describe("instance record fuzz", () => {
  it("instance record fuzz - on memory discovery each malformed record is skipped once, counted, and the valid instance serves", async () => {
    const store = new MemoryDiscoveryStore();
    await fuzzInstances(() => ({ env: {}, discovery: { kind: "memory", store } }), 150);
  });

  describe("on etcd", () => {
    let etcd: EtcdServer;
    beforeAll(async () => {
      etcd = await startEtcd();
    });
    afterAll(async () => {
      await etcd?.stop();
    });

    it("instance record fuzz - on etcd each malformed record is skipped once, counted, and the valid instance serves", async () => {
      await fuzzInstances(
        () => ({
          env: {},
          discovery: { kind: "etcd", endpoints: [etcd.endpoint] },
          requestPlane: { kind: "tcp", host: "127.0.0.1" },
        }),
        40,
      );
    });
  });
});
