import { DistributedRuntime, delay, direct, EtcdDiscovery, TdistError, withTimeout } from "@tdist/runtime";
import { type EtcdServer, NodeProcess, startEtcd } from "@tdist/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type HelloRequest, type HelloResponse, helloClient } from "./hello-world.js";

const SERVER = "examples/hello-world/dist/server.js";
const CLIENT = "examples/hello-world/dist/client.js";
const LEASE_TTL_MS = 2_000;

describe("hello world - across processes on etcd", () => {
  let etcd: EtcdServer;
  const processes: NodeProcess[] = [];
  const runtimes: DistributedRuntime[] = [];

  const env = () => ({
    TDIST_DISCOVERY: "etcd",
    TDIST_ETCD_ENDPOINTS: etcd.endpoint,
    TDIST_LEASE_TTL_MS: String(LEASE_TTL_MS),
    TDIST_LOG_LEVEL: "warn",
  });

  async function startServer(): Promise<{ process: NodeProcess; instanceId: string }> {
    const server = new NodeProcess({ name: "hello-server", script: SERVER, env: env() });
    processes.push(server);
    const match = await server.waitForOutput(/"event":"serving","instanceId":"([0-9a-f]+)"/);
    return { process: server, instanceId: match[1] as string };
  }

  async function callerClient() {
    const runtime = await DistributedRuntime.create({ env: env() });
    runtimes.push(runtime);
    return helloClient(runtime);
  }

  beforeAll(async () => {
    etcd = await startEtcd();
  });

  afterEach(async () => {
    await Promise.all(runtimes.splice(0).map((runtime) => runtime.shutdown({ graceMs: 100 })));
    // SIGTERM: servers deregister, so the next test does not see their leases linger.
    await Promise.all(processes.splice(0).map((p) => p.terminate(5_000)));
  });

  afterAll(async () => {
    await etcd?.stop();
  });

  it("hello - a client process spreads requests round-robin over two server processes", async () => {
    const servers = await Promise.all([startServer(), startServer()]);
    const client = new NodeProcess({
      name: "hello-client",
      script: CLIENT,
      args: ["hello", "distributed", "world", "--requests", "6", "--json"],
      env: env(),
    });
    processes.push(client);
    const exit = await client.exited(20_000);
    expect(exit.code).toBe(0);
    const lines = client.output
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { instanceId: string; words: string[] });
    expect(lines).toHaveLength(6);
    for (const line of lines) expect(line.words).toEqual(["Hello", "distributed", "world"]);
    const ids = lines.map((line) => line.instanceId);
    for (let i = 2; i < ids.length; i++) expect(ids[i]).toBe(ids[i - 2]);
    expect(new Set(ids)).toEqual(new Set(servers.map((s) => s.instanceId)));
  });

  it("cluster - three server processes, one round-robin client: 300 requests spread 100/100/100", async () => {
    await Promise.all([startServer(), startServer(), startServer()]);
    const client = await callerClient();
    await client.waitForInstances({ count: 3, timeoutMs: 10_000 });
    const counts = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      for await (const chunk of client.generate({ text: "hi" })) {
        counts.set(chunk.instanceId, (counts.get(chunk.instanceId) ?? 0) + 1);
      }
    }
    expect([...counts.values()]).toEqual([100, 100, 100]);
  });

  it("cluster - SIGKILL mid-stream: disconnected within 1 s, out of the client's set at once, out of etcd within the TTL", async () => {
    const { process: server, instanceId } = await startServer();
    const client = await callerClient();
    await client.waitForInstances({ timeoutMs: 10_000 });
    const stream = client.generate(
      { text: "one two three four five six seven eight nine ten", delayMs: 100 },
      { router: direct(instanceId) },
    );
    expect((await stream.next()).value?.word).toBe("One");
    const killedAt = performance.now();
    await server.kill();
    const error = await withTimeout("stream failure", 2_000, undefined, async () => {
      try {
        for (;;) if ((await stream.next()).done) return undefined;
      } catch (err) {
        return err;
      }
    });
    expect(TdistError.inCategory(error, "disconnected")).toBe(true);
    expect(performance.now() - killedAt).toBeLessThan(1_000);
    expect(client.instances().map((i) => i.instanceId)).not.toContain(instanceId);
    const discovery = await EtcdDiscovery.connect({ endpoints: [etcd.endpoint] });
    try {
      await withTimeout("lease expiry", LEASE_TTL_MS + 3_000, undefined, async () => {
        while ((await discovery.list("v1/instances/hello/")).some((kv) => kv.key.endsWith(instanceId)))
          await delay(100);
      });
    } finally {
      await discovery.close();
    }
  });

  it("cluster - SIGTERM deregisters first, lets the in-flight stream finish, and exits 0", async () => {
    const { process: server, instanceId } = await startServer();
    const client = await callerClient();
    await client.waitForInstances({ timeoutMs: 10_000 });
    const words = "one two three four five six seven eight";
    const stream = client.generate({ text: words, delayMs: 100 } satisfies HelloRequest, {
      router: direct(instanceId),
    });
    const received: string[] = [];
    const first = await stream.next();
    received.push((first.value as HelloResponse).word);
    server.signal("SIGTERM");
    await withTimeout("deregistration", 2_000, undefined, async () => {
      while (client.instances().some((i) => i.instanceId === instanceId)) await delay(10);
    });
    for await (const chunk of stream) received.push(chunk.word);
    expect(received.join(" ")).toBe("One two three four five six seven eight");
    expect((await server.exited(10_000)).code).toBe(0);
  });

  it("cluster - after etcd restarts with its data lost, servers re-register and clients see them again", async () => {
    const { instanceId } = await startServer();
    const client = await callerClient();
    await client.waitForInstances({ timeoutMs: 10_000 });
    await etcd.restart({ wipeData: true });
    await withTimeout("re-registration", 15_000, undefined, async () => {
      for (;;) {
        const ids = client.instances().map((i) => i.instanceId);
        if (ids.includes(instanceId)) {
          const words: string[] = [];
          try {
            for await (const chunk of client.generate({ text: "back again" })) words.push(chunk.word);
            if (words.join(" ") === "Back again") return;
          } catch {
            // Still settling; try again.
          }
        }
        await delay(100);
      }
    });
  });
});
