import { randomBytes } from "node:crypto";
import { request } from "node:http";
import type { Socket } from "node:net";

/**
 * A session on another Node process's inspector (`--inspect`): just enough
 * WebSocket (RFC 6455 client frames, unfragmented) to send DevTools protocol
 * commands, so the soak can make the server collect garbage before it reads
 * RSS without the server exposing anything for it.
 */
export class InspectorSession {
  readonly #socket: Socket;
  #buffer = Buffer.alloc(0);
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();

  private constructor(socket: Socket, head: Buffer) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#receive(chunk));
    socket.on("close", () => {
      for (const { reject } of this.#pending.values()) reject(new Error("inspector session closed"));
      this.#pending.clear();
    });
    if (head.length > 0) this.#receive(head);
  }

  /** Opens a session on `ws://host:port/<id>`, as the process printed after "Debugger listening on". */
  static open(url: string, timeoutMs: number): Promise<InspectorSession> {
    const target = new URL(url);
    return new Promise((resolve, reject) => {
      const req = request({
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        agent: false,
        headers: {
          connection: "Upgrade",
          upgrade: "websocket",
          "sec-websocket-key": randomBytes(16).toString("base64"),
          "sec-websocket-version": "13",
        },
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`inspector did not answer in ${timeoutMs} ms`)));
      req.on("upgrade", (_res, socket, head) => {
        req.setTimeout(0);
        resolve(new InspectorSession(socket, head));
      });
      req.on("response", (res) => reject(new Error(`inspector refused the upgrade: ${res.statusCode}`)));
      req.on("error", reject);
      req.end();
    });
  }

  /** Sends one DevTools protocol command and resolves with its result. */
  send(method: string, params: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<unknown> {
    const id = this.#nextId++;
    const payload = Buffer.from(JSON.stringify({ id, method, params }));
    const mask = randomBytes(4);
    const length = payload.length;
    const header =
      length < 126
        ? Buffer.from([0x81, 0x80 | length])
        : length < 65_536
          ? Buffer.from([0x81, 0x80 | 126, length >> 8, length & 0xff])
          : (() => {
              const big = Buffer.alloc(10);
              big[0] = 0x81;
              big[1] = 0x80 | 127;
              big.writeBigUInt64BE(BigInt(length), 2);
              return big;
            })();
    for (let i = 0; i < length; i++) payload[i] = (payload[i] as number) ^ (mask[i % 4] as number);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method} got no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#socket.write(Buffer.concat([header, mask, payload]));
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #receive(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      if (this.#buffer.length < 2) return;
      const opcode = (this.#buffer[0] as number) & 0x0f;
      let length = (this.#buffer[1] as number) & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.#buffer.length < 4) return;
        length = this.#buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.#buffer.length < 10) return;
        length = Number(this.#buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.#buffer.length < offset + length) return;
      const payload = this.#buffer.subarray(offset, offset + length);
      this.#buffer = this.#buffer.subarray(offset + length);
      if (opcode !== 0x1) continue;
      const message = JSON.parse(payload.toString("utf8")) as { id?: number; result?: unknown; error?: unknown };
      if (message.id === undefined) continue;
      const waiter = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (message.error !== undefined) waiter?.reject(new Error(JSON.stringify(message.error)));
      else waiter?.resolve(message.result);
    }
  }
}

/** A full, compacting GC in the inspected process, then its heap in use (MB). */
export async function collectGarbage(url: string, timeoutMs: number): Promise<{ heapUsedMb: number }> {
  const session = await InspectorSession.open(url, timeoutMs);
  try {
    await session.send("HeapProfiler.collectGarbage", {}, timeoutMs);
    const usage = (await session.send("Runtime.getHeapUsage", {}, timeoutMs)) as { usedSize: number };
    return { heapUsedMb: usage.usedSize / 1024 / 1024 };
  } finally {
    session.close();
  }
}
