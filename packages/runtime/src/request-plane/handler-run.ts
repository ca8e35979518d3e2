import type { Context } from "../context.js";
import { TdistError, type WireError } from "../errors/tdist-error.js";
import type { Handler } from "../handler.js";

/** Where a running handler's responses go: a TCP stream, a NATS reply subject. */
export interface ResponseSink {
  send(value: unknown): void;
  end(): void;
  fail(error: WireError): void;
  /** A promise to wait on while the transport itself is saturated, else undefined. */
  backpressure(): Promise<void> | undefined;
}

/**
 * The wire form of an error thrown by a handler. Deliberate `bad_request`
 * errors keep their code; everything else becomes `remote_handler` carrying
 * the message, so a failure inside the handler is never mistaken for a
 * transport failure of the caller's own connection.
 */
export function handlerErrorToWire(err: unknown): WireError {
  if (err instanceof TdistError && err.category === "bad_request") return err.toWire();
  const message =
    err instanceof TdistError ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
  return { code: "remote_handler", category: "remote_handler", message };
}

/** The wire form of why a run was killed: a TdistError keeps its code. */
function killReasonToWire(reason: unknown): WireError {
  if (reason instanceof TdistError) return reason.toWire();
  return new TdistError("cancelled", "request killed", { cause: reason }).toWire();
}

/** The wire form of a failure to send one response: `codec_error` unless the sink gave a code. */
function sendErrorToWire(err: unknown): WireError {
  return TdistError.wrap(err, "codec_error", "response cannot be sent").toWire();
}

/**
 * Runs one handler invocation under credit-based flow control: the generator
 * is pulled only while the caller has granted credit, so a slow consumer
 * pauses the handler. Kill closes the generator (its `finally` runs).
 */
export class HandlerRun {
  private credit: number;
  private wake: (() => void) | undefined;
  private finished = false;

  constructor(
    readonly ctx: Context,
    initialCredit: number,
    private readonly sink: ResponseSink,
  ) {
    this.credit = initialCredit;
  }

  get done(): boolean {
    return this.finished;
  }

  addCredit(n: number): void {
    this.credit += n;
    this.wakeUp();
  }

  stop(): void {
    this.ctx.stopGenerating();
  }

  /**
   * Ends the run and tells the caller why, as this stream's error: what the
   * runtime does when a drain's grace runs out or the server closes, so every
   * request plane's caller hears `shutting_down` rather than a dropped
   * connection. A run that already finished is left alone.
   */
  kill(reason?: unknown): void {
    if (this.finished || this.ctx.isKilled) return;
    this.sink.fail(killReasonToWire(reason));
    this.cancel(reason);
  }

  /** Ends the run without a word to the caller: it asked for this (KILL) or is gone. */
  cancel(reason?: unknown): void {
    if (this.finished || this.ctx.isKilled) return;
    this.ctx.kill(reason);
    this.wakeUp();
  }

  /** Never rejects: every outcome is reported through the sink. */
  async run(handler: Handler, request: unknown): Promise<void> {
    const { ctx, sink } = this;
    let iterator: AsyncIterator<unknown> | undefined;
    try {
      iterator = handler(request, ctx)[Symbol.asyncIterator]();
      for (;;) {
        while (this.credit <= 0 && !ctx.isKilled) await new Promise<void>((resolve) => (this.wake = resolve));
        const pressure = sink.backpressure();
        if (pressure) await pressure;
        if (ctx.isKilled) break;
        const result = await iterator.next();
        if (ctx.isKilled) break;
        if (result.done) {
          sink.end();
          iterator = undefined;
          break;
        }
        this.credit--;
        try {
          sink.send(result.value);
        } catch (err) {
          // The value cannot go on this transport (too large, not serialisable): that stream fails alone, with the
          // transport's code, and the handler is closed.
          sink.fail(sendErrorToWire(err));
          break;
        }
      }
    } catch (err) {
      if (!ctx.isKilled) sink.fail(handlerErrorToWire(err));
    } finally {
      this.finished = true;
      ctx.dispose();
      if (iterator?.return) {
        try {
          await iterator.return();
        } catch {
          // The handler's own cleanup failed after the caller left; nobody is listening.
        }
      }
    }
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
