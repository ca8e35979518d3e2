import type { ServerResponse } from "node:http";

/**
 * Server-sent events written straight to the raw response (no per-event
 * stream wrappers), waiting for `drain` when the client reads slowly so
 * backpressure reaches the engine. `closed` aborts when the client goes away.
 */
export class SseWriter {
  private readonly controller = new AbortController();
  private finished = false;

  constructor(private readonly response: ServerResponse) {
    response.on("close", () => {
      if (!this.finished) this.controller.abort();
    });
  }

  /** Aborts when the client disconnects before the stream ends. */
  get closed(): AbortSignal {
    return this.controller.signal;
  }

  start(headers: Record<string, string> = {}): void {
    this.response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
      ...headers,
    });
    this.response.flushHeaders();
  }

  /** Writes one `data:` event; resolves when it may write again. */
  async send(payload: unknown): Promise<void> {
    await this.write(`data: ${JSON.stringify(payload)}\n\n`);
  }

  /** Writes one `data:` event whose payload is already JSON text. */
  sendJson(json: string): Promise<void> {
    return this.write(`data: ${json}\n\n`);
  }

  async done(): Promise<void> {
    await this.write("data: [DONE]\n\n");
    this.finished = true;
    this.response.end();
  }

  /** Ends the stream without [DONE] (after an error event, or when the client left). */
  end(): void {
    this.finished = true;
    if (!this.response.writableEnded) this.response.end();
  }

  private write(text: string): Promise<void> {
    if (this.controller.signal.aborted || this.response.writableEnded) return Promise.resolve();
    if (this.response.write(text)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.response.off("drain", done);
        this.response.off("close", done);
        resolve();
      };
      this.response.on("drain", done);
      this.response.on("close", done);
    });
  }
}
