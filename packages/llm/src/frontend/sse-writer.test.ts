import { createServer, request, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { SseWriter } from "./sse-writer.js";

let server: Server | undefined;

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

/** A real server whose one response is handed to `handle`; resolves with its port. */
async function serve(handle: (response: ServerResponse) => void): Promise<number> {
  const created = createServer((_req, res) => handle(res));
  server = created;
  await new Promise<void>((resolve) => created.listen(0, "127.0.0.1", resolve));
  return (created.address() as AddressInfo).port;
}

function get(port: number): Promise<{ headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/" }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ headers: res.headers, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setTimeout(5_000, () => req.destroy(new Error("timed out")));
    req.end();
  });
}

describe("sse writer", () => {
  it("sse writer - events queued in one turn go out as one write, then [DONE]", async () => {
    const writes: unknown[] = [];
    const port = await serve((res) => {
      const write = res.write.bind(res) as (chunk: unknown) => boolean;
      res.write = ((chunk: unknown) => {
        writes.push(chunk);
        return write(chunk);
      }) as typeof res.write;
      const sse = new SseWriter(res);
      sse.start({ "x-extra": "1" });
      sse.sendJson('{"a":1}');
      sse.send({ b: 2 });
      setImmediate(() => {
        sse.sendJson('{"c":3}');
        sse.done();
      });
    });
    const { headers, body } = await get(port);
    expect(headers["content-type"]).toBe("text/event-stream; charset=utf-8");
    expect(headers["x-extra"]).toBe("1");
    expect(body).toBe('data: {"a":1}\n\ndata: {"b":2}\n\ndata: {"c":3}\n\ndata: [DONE]\n\n');
    expect(writes).toEqual(['data: {"a":1}\n\ndata: {"b":2}\n\n']);
  });

  it("sse writer - a client that stops reading makes backpressure a promise until it drains", async () => {
    let pressure: Promise<void> | undefined;
    let release: () => void = () => {};
    const port = await serve((res) => {
      const sse = new SseWriter(res);
      sse.start();
      const big = JSON.stringify("x".repeat(1024));
      const pump = (): void => {
        for (let i = 0; i < 10_000 && sse.backpressure === undefined; i++) sse.sendJson(big);
        pressure = sse.backpressure;
        if (pressure === undefined) {
          setImmediate(pump);
          return;
        }
        release();
        void pressure.then(() => sse.done());
      };
      pump();
    });
    const blocked = new Promise<void>((resolve) => {
      release = resolve;
    });
    const reading = get(port);
    await blocked;
    expect(pressure).toBeInstanceOf(Promise);
    const { body } = await reading;
    expect(body.endsWith("data: [DONE]\n\n")).toBe(true);
  });

  it("sse writer - closed aborts when the client goes away and later events are dropped", async () => {
    let writer: SseWriter | undefined;
    const started = new Promise<void>((resolve) => {
      void serve((res) => {
        writer = new SseWriter(res);
        writer.start();
        writer.sendJson("{}");
        resolve();
      }).then((port) => {
        const req = request({ host: "127.0.0.1", port, path: "/" }, (res) => {
          res.once("data", () => req.destroy());
        });
        req.on("error", () => {});
        req.end();
      });
    });
    await started;
    const sse = writer as SseWriter;
    await new Promise<void>((resolve) => {
      if (sse.closed.aborted) resolve();
      else sse.closed.addEventListener("abort", () => resolve(), { once: true });
    });
    expect(() => sse.sendJson("{}")).not.toThrow();
    expect(() => sse.end()).not.toThrow();
  });
});
