import type { ServerResponse } from "node:http";

/** Above this many queued characters the writer writes at once instead of waiting for the end of the turn. */
const MAX_PENDING_CHARS = 64 * 1024;

/**
 * Server-sent events written straight to the raw response. Events queued in
 * one turn of the event loop go out as one `write` at its end (an engine
 * that runs ahead yields many tokens per turn; one write each cost a chunk
 * header, a buffered write request and an iovec apiece). When the client
 * reads slowly, `backpressure` is a promise that settles on `drain`, so
 * backpressure reaches the engine. `closed` aborts when the client goes away.
 */
export class SseWriter {
  private readonly controller = new AbortController();
  private finished = false;
  private pending = "";
  private flushScheduled = false;
  private drained: Promise<void> | undefined;
  private readonly flushNow = (): void => this.flush();

  constructor(private readonly response: ServerResponse) {
    response.on("close", () => {
      if (!this.finished) this.controller.abort();
    });
  }

  /** Aborts when the client disconnects before the stream ends. */
  get closed(): AbortSignal {
    return this.controller.signal;
  }

  /** Sets the status and headers; they go out with the first event (no write of their own). */
  start(headers: Record<string, string> = {}): void {
    this.response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
      ...headers,
    });
  }

  /**
   * While the client is behind (the socket's buffer is full), a promise that
   * settles when it has caught up or gone; wait on it before queueing more.
   * `undefined` otherwise, so the usual case needs no await per event.
   */
  get backpressure(): Promise<void> | undefined {
    return this.drained;
  }

  /** Queues one `data:` event. */
  send(payload: unknown): void {
    this.sendJson(JSON.stringify(payload));
  }

  /** Queues one `data:` event whose payload is already JSON text. */
  sendJson(json: string): void {
    if (this.isClosed()) return;
    this.pending += `data: ${json}\n\n`;
    if (this.pending.length >= MAX_PENDING_CHARS) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flushNow);
    }
  }

  /** Writes what is queued and `[DONE]`, and ends the response. */
  done(): void {
    if (this.isClosed()) return;
    const text = `${this.pending}data: [DONE]\n\n`;
    this.pending = "";
    this.finished = true;
    this.response.end(text);
  }

  /** Ends the stream without [DONE] (after an error event, or when the client left). */
  end(): void {
    this.finished = true;
    if (this.response.writableEnded) return;
    const text = this.controller.signal.aborted ? "" : this.pending;
    this.pending = "";
    this.response.end(text);
  }

  private isClosed(): boolean {
    return this.controller.signal.aborted || this.response.writableEnded;
  }

  private flush(): void {
    this.flushScheduled = false;
    const text = this.pending;
    if (text === "") return;
    this.pending = "";
    if (this.isClosed()) return;
    if (!this.response.write(text) && this.drained === undefined) {
      this.drained = new Promise((resolve) => {
        const done = (): void => {
          this.response.off("drain", done);
          this.response.off("close", done);
          this.drained = undefined;
          resolve();
        };
        this.response.on("drain", done);
        this.response.on("close", done);
      });
    }
  }
}
