import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { type InProcessCluster, startInProcessCluster } from "@tdist/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { Context } from "../context.js";
import type { Handler } from "../handler.js";
import { silentLogger } from "../logger.js";
import { collect, expectError } from "../testing/request-plane-suite.js";
import { delay, withTimeout } from "../util/abort.js";
import { jsonCodec } from "./codec.js";
import { encodeFrame, type Frame, FrameParser, FrameType } from "./frame.js";
import { TcpRequestClient } from "./tcp-request-client.js";

const HEARTBEAT_MS = 100;
/** The connection's HEARTBEAT_MISSES intervals of silence. */
const HUNG_AFTER_MS = 5 * HEARTBEAT_MS;

/**
 * A raw TCP "server" that hands every frame it reads to `onFrame` with a
 * writer to its socket; what it does not answer stays unanswered, as from a
 * SIGSTOPped process whose kernel still accepts the bytes.
 */
async function rawServer(
  onFrame: (frame: Frame, send: (type: number, streamId: number, payload?: Buffer) => void) => void,
): Promise<{ server: Server; address: string; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    const send = (type: number, streamId: number, payload?: Buffer) =>
      socket.write(encodeFrame(type as Frame["type"], streamId, payload));
    const parser = new FrameParser(1 << 20, (frame) => onFrame(frame, send));
    socket.on("data", (chunk: Buffer) => parser.push(chunk));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}`, sockets };
}

function tcpClient(heartbeatMs = HEARTBEAT_MS): TcpRequestClient {
  return new TcpRequestClient({
    maxFrameBytes: 1 << 20,
    connectTimeoutMs: 2_000,
    heartbeatMs,
    streamWindow: 8,
    codec: jsonCodec,
    logger: silentLogger,
  });
}

describe("tcp request plane - heartbeat", () => {
  let cluster: InProcessCluster | undefined;
  const cleanups: Array<() => Promise<void> | void> = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
    await cluster?.shutdown();
    cluster = undefined;
  });

  it("tcp heartbeat - a server that goes silent mid-stream without closing fails the stream with disconnected", async () => {
    const { server, address, sockets } = await rawServer((frame, send) => {
      // One response, then nothing: not END, not PONG, and the socket stays open.
      if (frame.type === FrameType.REQUEST) send(FrameType.DATA, frame.streamId, Buffer.from('"first"'));
    });
    const client = tcpClient();
    cleanups.push(async () => {
      await client.close();
      for (const socket of sockets) socket.destroy();
      server.close();
    });
    const disconnected = new Promise<string>((resolve) => client.onDisconnect((a) => resolve("tcp" in a ? a.tcp : "")));
    const stream = client.open({ tcp: address }, "go", { path: "p", instanceId: "i", context: new Context() });
    const started = Date.now();
    const seen: unknown[] = [];
    const consume = async (): Promise<void> => {
      for await (const value of stream) seen.push(value);
    };
    await expectError(consume(), "disconnected");
    const elapsed = Date.now() - started;
    expect(seen).toEqual(["first"]);
    expect(elapsed).toBeGreaterThanOrEqual(HUNG_AFTER_MS);
    expect(elapsed).toBeLessThan(HUNG_AFTER_MS + 1_500);
    // The path of a lost connection, which is what inhibits the instance.
    expect(await withTimeout("disconnect event", 1_000, undefined, () => disconnected)).toBe(address);
    // The caller dropped the connection: the silent server sees it close.
    await withTimeout("server socket close", 2_000, undefined, () =>
      Promise.all(
        sockets.map(
          (socket) => new Promise((resolve) => (socket.destroyed ? resolve(undefined) : socket.once("close", resolve))),
        ),
      ),
    );
  });

  it("tcp heartbeat - a healthy stream slower than the heartbeat timeout is not cut", async () => {
    cluster = await startInProcessCluster(1, {
      requestPlane: { kind: "tcp", host: "127.0.0.1" },
      tcpHeartbeatMs: HEARTBEAT_MS,
    });
    const slow: Handler<unknown, number> = async function* (_request, ctx) {
      for (let i = 0; i < 3; i++) {
        // Longer than the whole timeout: only the PONGs keep the connection trusted.
        await delay(HUNG_AFTER_MS + 200, ctx.signal);
        yield i;
      }
    };
    const endpoint = cluster.runtimes[0]?.namespace("test").component("slow").endpoint("generate");
    await endpoint?.serve(slow);
    const caller = await cluster.add();
    const client = await caller.namespace("test").component("slow").endpoint("generate").client();
    await client.waitForInstances({ timeoutMs: 2_000 });
    const values = await withTimeout("slow stream", 3 * (HUNG_AFTER_MS + 200) + 3_000, undefined, () =>
      collect(client.generate({})),
    );
    expect(values).toEqual([0, 1, 2]);
  });

  it("tcp heartbeat - PINGs flow only while the connection has open streams", async () => {
    const pings: number[] = [];
    const finishers: Array<() => void> = [];
    const { server, address, sockets } = await rawServer((frame, send) => {
      if (frame.type === FrameType.PING) {
        pings.push(Date.now());
        send(FrameType.PONG, 0);
      }
      if (frame.type === FrameType.REQUEST) {
        finishers.push(() => {
          send(FrameType.DATA, frame.streamId, Buffer.from('"done"'));
          send(FrameType.END, frame.streamId);
        });
      }
    });
    const client = tcpClient();
    cleanups.push(async () => {
      await client.close();
      for (const socket of sockets) socket.destroy();
      server.close();
    });
    const stream = client.open({ tcp: address }, "go", { path: "p", instanceId: "i", context: new Context() });
    const values = collect(stream);
    // Open longer than the timeout: answered PINGs keep it alive.
    await delay(HUNG_AFTER_MS + 3 * HEARTBEAT_MS);
    expect(pings.length).toBeGreaterThanOrEqual(3);
    finishers.shift()?.();
    expect(await withTimeout("stream end", 2_000, undefined, () => values)).toEqual(["done"]);
    // A PING written just before the END arrived may still be on its way to the server.
    await delay(HEARTBEAT_MS / 2);
    const pingsWhileOpen = pings.length;
    // Idle: the connection stays open and sends nothing.
    await delay(4 * HEARTBEAT_MS);
    expect(pings.length).toBe(pingsWhileOpen);
    expect(sockets.every((socket) => !socket.destroyed)).toBe(true);
    // A new stream restarts it on the same connection.
    const again = collect(client.open({ tcp: address }, "go", { path: "p", instanceId: "i", context: new Context() }));
    await delay(3 * HEARTBEAT_MS);
    expect(pings.length).toBeGreaterThan(pingsWhileOpen);
    expect(sockets).toHaveLength(1);
    finishers.shift()?.();
    expect(await withTimeout("second stream end", 2_000, undefined, () => again)).toEqual(["done"]);
  });
});
