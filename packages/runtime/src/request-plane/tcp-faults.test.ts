import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { type InProcessCluster, startInProcessCluster } from "@tdist/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { Context } from "../context.js";
import type { Handler } from "../handler.js";
import { silentLogger } from "../logger.js";
import { collect, expectError, wordsHandler } from "../testing/request-plane-suite.js";
import { delay, withTimeout } from "../util/abort.js";
import { jsonCodec } from "./codec.js";
import {
  decodeRequestPayload,
  encodeFrame,
  encodeRequestPayload,
  FrameParser,
  FrameType,
  type FrameTypeValue,
} from "./frame.js";
import { TcpRequestClient } from "./tcp-request-client.js";

async function rawSocket(address: string): Promise<Socket> {
  const [host, port] = address.split(":") as [string, string];
  return withTimeout("raw connect", 2_000, undefined, () => {
    return new Promise<Socket>((resolve, reject) => {
      const socket = connect({ host, port: Number(port) }, () => resolve(socket));
      socket.resume();
      socket.once("error", reject);
    });
  });
}

function closed(socket: Socket): Promise<void> {
  return withTimeout("socket close", 3_000, undefined, () => {
    return new Promise<void>((resolve) => {
      if (socket.destroyed) resolve();
      else socket.once("close", () => resolve());
    });
  });
}

describe("tcp request plane - faults", () => {
  let cluster: InProcessCluster | undefined;

  afterEach(async () => {
    await cluster?.shutdown();
    cluster = undefined;
  });

  async function serveWords(options = {}): Promise<{ address: string; cluster: InProcessCluster }> {
    cluster = await startInProcessCluster(1, { requestPlane: { kind: "tcp", host: "127.0.0.1" }, ...options });
    const endpoint = cluster.runtimes[0]?.namespace("test").component("words").endpoint("generate");
    await endpoint?.serve(wordsHandler);
    const client = await endpoint?.client();
    const [instance] = (await client?.waitForInstances({ timeoutMs: 2_000 })) ?? [];
    if (!instance || !("tcp" in instance.transport)) throw new Error("no tcp instance");
    return { address: instance.transport.tcp, cluster };
  }

  async function callerClient(c: InProcessCluster) {
    const caller = await c.add();
    const client = await caller.namespace("test").component("words").endpoint("generate").client();
    await client.waitForInstances({ timeoutMs: 2_000 });
    return client;
  }

  it("tcp - garbage bytes close that connection and the server keeps serving", async () => {
    const { address, cluster: c } = await serveWords();
    const socket = await rawSocket(address);
    socket.on("error", () => {});
    socket.write(Buffer.from([0, 0, 0, 9, 99, 0, 0, 0, 1, 1, 2, 3, 4]));
    await closed(socket);
    const client = await callerClient(c);
    expect(await collect(client.generate({ text: "still alive" }))).toEqual(["still", "alive"]);
  });

  it("tcp - an oversize frame is refused with frame_too_large, never allocated, and the server keeps serving", async () => {
    const { address, cluster: c } = await serveWords({ maxFrameBytes: 64 * 1024 });
    const socket = await rawSocket(address);
    socket.on("error", () => {});
    const errors: unknown[] = [];
    const parser = new FrameParser(1 << 20, (frame) => {
      if (frame.type === FrameType.ERROR) errors.push(JSON.parse(frame.payload.toString()));
    });
    socket.on("data", (chunk: Buffer) => parser.push(chunk));
    const header = Buffer.alloc(9);
    header.writeUInt32BE(2 ** 31, 0);
    header[4] = FrameType.REQUEST;
    socket.write(header);
    await closed(socket);
    expect(errors).toEqual([expect.objectContaining({ code: "frame_too_large" })]);
    const client = await callerClient(c);
    expect(await collect(client.generate({ text: "ok" }))).toEqual(["ok"]);
  });

  it("tcp - a malformed REQUEST payload fails that stream with protocol_error; the connection serves on", async () => {
    const { address, cluster: c } = await serveWords();
    const socket = await rawSocket(address);
    socket.on("error", () => {});
    const frames: { type: number; id: number; code?: string }[] = [];
    const parser = new FrameParser(1 << 20, (frame) => {
      const code = frame.type === FrameType.ERROR ? JSON.parse(frame.payload.toString()).code : undefined;
      frames.push({ type: frame.type, id: frame.streamId, ...(code ? { code } : {}) });
    });
    socket.on("data", (chunk: Buffer) => parser.push(chunk));
    const request = (headers: unknown) =>
      Buffer.concat([
        Buffer.from([0, 19]),
        Buffer.from("test/words/generate"),
        Buffer.from([0, JSON.stringify(headers).length]),
        Buffer.from(JSON.stringify(headers)),
        Buffer.from('{"text":"a"}'),
      ]);
    socket.write(encodeFrame(FrameType.REQUEST, 1, Buffer.from([0, 200, 1])));
    socket.write(encodeFrame(FrameType.REQUEST, 2, request({ requestId: "r", credit: 4, annotations: "x" })));
    socket.write(encodeFrame(FrameType.REQUEST, 3, request({ requestId: "r", credit: 4, deadline: "soon" })));
    const payload = encodeRequestPayload(
      "test/words/generate",
      { requestId: "r1", credit: 8 },
      Buffer.from('{"text":"a b"}'),
    );
    socket.write(encodeFrame(FrameType.REQUEST, 7, payload));
    await withTimeout("raw response", 2_000, undefined, async () => {
      while (!frames.some((frame) => frame.type === FrameType.END)) await delay(5);
    });
    expect(frames).toEqual([
      { type: FrameType.ERROR, id: 1, code: "protocol_error" },
      { type: FrameType.ERROR, id: 2, code: "protocol_error" },
      { type: FrameType.ERROR, id: 3, code: "protocol_error" },
      { type: FrameType.DATA, id: 7 },
      { type: FrameType.DATA, id: 7 },
      { type: FrameType.END, id: 7 },
    ]);
    expect(socket.destroyed).toBe(false);
    socket.destroy();
    const client = await callerClient(c);
    expect(await collect(client.generate({ text: "fine" }))).toEqual(["fine"]);
  });

  it("tcp - unknown endpoint paths and bad request bodies get typed errors on their stream", async () => {
    const { address } = await serveWords();
    const socket = await rawSocket(address);
    const errors: { id: number; code: string }[] = [];
    const parser = new FrameParser(1 << 20, (frame) => {
      if (frame.type === FrameType.ERROR) {
        errors.push({ id: frame.streamId, code: JSON.parse(frame.payload.toString()).code });
      }
    });
    socket.on("data", (chunk: Buffer) => parser.push(chunk));
    const headers = { requestId: "r", credit: 4 };
    socket.write(
      encodeFrame(FrameType.REQUEST, 1, encodeRequestPayload("test/none/generate", headers, Buffer.from("{}"))),
    );
    socket.write(
      encodeFrame(FrameType.REQUEST, 2, encodeRequestPayload("test/words/generate", headers, Buffer.from("{oops"))),
    );
    await withTimeout("errors", 2_000, undefined, async () => {
      while (errors.length < 2) await delay(5);
    });
    expect(errors).toEqual([
      { id: 1, code: "endpoint_not_found" },
      { id: 2, code: "codec_error" },
    ]);
    socket.destroy();
  });

  it("tcp - a lost connection fails in-flight streams with disconnected at once; the next request reconnects", async () => {
    const started: string[] = [];
    const slow: Handler<{ id: string }, string> = async function* (request, ctx) {
      started.push(request.id);
      yield "begin";
      await delay(60_000, ctx.signal);
      yield "never";
    };
    cluster = await startInProcessCluster(1, { requestPlane: { kind: "tcp", host: "127.0.0.1" } });
    const server = cluster.runtimes[0];
    await server?.namespace("test").component("slow").endpoint("generate").serve(slow);
    const caller = await cluster.add();
    const client = await caller.namespace("test").component("slow").endpoint("generate").client({ inhibitMs: 200 });
    await client.waitForInstances({ timeoutMs: 2_000 });
    const streams = [client.generate({ id: "a" }), client.generate({ id: "b" })];
    for (const stream of streams) expect((await stream.next()).value).toBe("begin");
    // Sever the connection from the server side, as a crashed peer or a cut cable would.
    const serverImpl = (server as unknown as { serverValue: { connections: Set<{ destroy(e: unknown): void }> } })
      .serverValue;
    const startedAt = performance.now();
    for (const connection of serverImpl.connections) connection.destroy(new Error("cut"));
    for (const stream of streams) await expectError(stream.next(), "disconnected");
    expect(performance.now() - startedAt).toBeLessThan(1_000);
    // The instance is out of routing briefly after connection loss; wait until it is back.
    const retry = await withTimeout("reconnect", 5_000, undefined, async () => {
      for (;;) {
        if (client.instances().length > 0) return client.generate({ id: "c" });
        await delay(50);
      }
    });
    expect((await retry.next()).value).toBe("begin");
    retry.kill();
  });

  it("tcp - a request larger than the maximum frame fails locally with frame_too_large", async () => {
    const { cluster: c } = await serveWords({ maxFrameBytes: 4 * 1024 });
    const client = await callerClient(c);
    await expectError(collect(client.generate({ text: "y".repeat(10_000) })), "frame_too_large");
    expect(await collect(client.generate({ text: "small" }))).toEqual(["small"]);
  });

  it("tcp - a response over the caller's own maximum fails that stream; the connection carries the others", async () => {
    // A server configured with a larger TDIST_MAX_FRAME_BYTES than the caller.
    const server = createServer((socket) => {
      const writer = (type: FrameTypeValue, id: number, payload?: Buffer) =>
        socket.write(encodeFrame(type, id, payload));
      const parser = new FrameParser(1 << 20, (frame) => {
        if (frame.type !== FrameType.REQUEST) return;
        const { body } = decodeRequestPayload(frame.payload);
        if (body.toString() === '"big"') {
          writer(FrameType.DATA, frame.streamId, Buffer.from(JSON.stringify("z".repeat(20_000))));
          writer(FrameType.END, frame.streamId);
        } else {
          writer(FrameType.DATA, frame.streamId, Buffer.from('"ok"'));
          writer(FrameType.END, frame.streamId);
        }
      });
      socket.on("data", (chunk: Buffer) => parser.push(chunk));
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = new TcpRequestClient({
      maxFrameBytes: 4 * 1024,
      connectTimeoutMs: 2_000,
      streamWindow: 8,
      codec: jsonCodec,
      logger: silentLogger,
    });
    try {
      const address = { tcp: `127.0.0.1:${(server.address() as AddressInfo).port}` };
      const open = (request: string) =>
        client.open(address, request, { path: "p", instanceId: "i", context: new Context() });
      const big = open("big");
      const small = open("small");
      await expectError(collect(big), "frame_too_large");
      expect(await collect(small)).toEqual(["ok"]);
      expect(await collect(open("again"))).toEqual(["ok"]);
    } finally {
      await client.close();
      server.close();
    }
  });

  it("tcp - connecting to a dead address is cannot_connect", async () => {
    cluster = await startInProcessCluster(1, { requestPlane: { kind: "tcp", host: "127.0.0.1" } });
    const runtime = cluster.runtimes[0];
    const key = "v1/instances/test/ghost/generate/abc";
    await runtime?.discovery.put(
      key,
      JSON.stringify({ instanceId: "abc", transport: { tcp: "127.0.0.1:1" }, metadata: {}, registeredAt: 0 }),
    );
    const client = await runtime?.namespace("test").component("ghost").endpoint("generate").client();
    await client?.waitForInstances({ timeoutMs: 1_000 });
    await expectError(collect(client?.generate({}) ?? (async function* () {})()), "cannot_connect");
  });
});
