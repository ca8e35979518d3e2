import { type NatsServer, startNats } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryDiscoveryStore } from "../discovery/memory-discovery.js";
import { DistributedRuntime } from "../runtime.js";
import { collect, wordsHandler } from "../testing/request-plane-suite.js";

describe("transport router", () => {
  let nats: NatsServer;
  beforeAll(async () => {
    nats = await startNats();
  });
  afterAll(async () => {
    await nats?.stop();
  });

  it("transport - a TCP-plane caller reaches NATS-plane and TCP-plane instances of one endpoint", async () => {
    const store = new MemoryDiscoveryStore();
    const natsServer = await DistributedRuntime.create({
      env: {},
      discovery: { kind: "memory", store },
      requestPlane: { kind: "nats", url: nats.url },
    });
    const tcpServer = await DistributedRuntime.create({ env: {}, discovery: { kind: "memory", store } });
    const caller = await DistributedRuntime.create({
      env: { TDIST_NATS_URL: nats.url },
      discovery: { kind: "memory", store },
    });
    try {
      for (const server of [natsServer, tcpServer]) {
        await server.namespace("mixed").component("words").endpoint("generate").serve(wordsHandler);
      }
      const client = await caller.namespace("mixed").component("words").endpoint("generate").client();
      const instances = await client.waitForInstances({ count: 2, timeoutMs: 5_000 });
      expect(instances.map((i) => Object.keys(i.transport)[0]).sort()).toEqual(["nats", "tcp"]);
      for (let i = 0; i < 4; i++)
        expect(await collect(client.generate({ text: "both planes" }))).toEqual(["both", "planes"]);
    } finally {
      await Promise.all([caller.shutdown(), natsServer.shutdown(), tcpServer.shutdown()]);
    }
  });
});
