import type { Context } from "../context.js";
import { TdistError } from "../errors/tdist-error.js";
import { type ResponseStream, STREAM_COMPLETED, STREAM_RETURNED, type StreamOutcome } from "../handler.js";
import type { StreamHooks } from "./request-plane.js";

/** What a response stream needs from the connection that carries it. */
export interface StreamTransport {
  sendCredit(streamId: number, credit: number): void;
  sendStop(streamId: number): void;
  sendKill(streamId: number): void;
  release(streamId: number): void;
}

type Waiter<T> = { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void };

/**
 * The caller's side of one TCP stream. Buffers at most the credit window
 * (the server never sends past it) and returns credit as items are consumed.
 */
export class TcpResponseStream<T> implements ResponseStream<T> {
  private items: unknown[] = [];
  private head = 0;
  private waiter: Waiter<T> | undefined;
  private state: "open" | "ended" | "failed" | "killed" = "open";
  private failure: unknown;
  private consumedSinceCredit = 0;
  private readonly creditBatch: number;
  private unlinkSignal: () => void = () => {};
  private firstResponse: (() => void) | undefined;

  constructor(
    readonly streamId: number,
    readonly instanceId: string,
    private readonly context: Context,
    window: number,
    private readonly transport: StreamTransport,
    private readonly hooks: StreamHooks = {},
  ) {
    this.creditBatch = Math.max(1, Math.floor(window / 2));
    if (context.isKilled) {
      this.state = "killed";
      const failure = toCancelled(context.cancelReason);
      this.failure = failure;
      context.dispose();
      hooks.onSettled?.({ status: "cancelled", error: failure });
      return;
    }
    this.firstResponse = hooks.onFirstResponse;
    const removeKill = context.onKill((reason) => this.kill(reason));
    const removeStop = context.onStop(() => this.stop());
    this.unlinkSignal = () => {
      removeKill();
      removeStop();
    };
  }

  get requestId(): string {
    return this.context.requestId;
  }

  /** False once the stream has ended, failed or been killed. */
  get isOpen(): boolean {
    return this.state === "open";
  }

  /** Called by the connection for each DATA frame (already decoded). */
  pushData(value: unknown): void {
    if (this.state !== "open") return;
    const first = this.firstResponse;
    if (first !== undefined) {
      this.firstResponse = undefined;
      first();
    }
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      this.consumed();
      waiter.resolve({ value: value as T, done: false });
      return;
    }
    this.items.push(value);
  }

  pushEnd(): void {
    if (this.state !== "open") return;
    this.state = "ended";
    this.settle(STREAM_COMPLETED);
  }

  pushError(error: TdistError): void {
    if (this.state !== "open") return;
    this.state = "failed";
    this.failure = error;
    this.settle({ status: "failed", error });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head] as T;
      this.items[this.head] = undefined;
      this.head++;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      }
      this.consumed();
      return Promise.resolve({ value, done: false });
    }
    switch (this.state) {
      case "open":
        return new Promise((resolve, reject) => {
          this.waiter = { resolve, reject };
        });
      case "ended":
        return Promise.resolve({ value: undefined, done: true });
      default:
        return Promise.reject(this.failure);
    }
  }

  /** `break` in `for await`: kill the remote handler and finish quietly. */
  return(): Promise<IteratorResult<T>> {
    if (this.state === "open") {
      this.state = "ended";
      this.transport.sendKill(this.streamId);
      this.settle(STREAM_RETURNED);
    }
    this.items = [];
    this.head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  stop(): void {
    if (this.state === "open") this.transport.sendStop(this.streamId);
  }

  kill(reason?: unknown): void {
    if (this.state !== "open") return;
    this.state = "killed";
    const failure = toCancelled(reason);
    this.failure = failure;
    this.items = [];
    this.head = 0;
    this.transport.sendKill(this.streamId);
    this.settle({ status: "cancelled", error: failure });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private consumed(): void {
    if (this.state !== "open") return;
    if (++this.consumedSinceCredit >= this.creditBatch) {
      this.transport.sendCredit(this.streamId, this.consumedSinceCredit);
      this.consumedSinceCredit = 0;
    }
  }

  private settle(outcome: StreamOutcome): void {
    this.unlinkSignal();
    this.unlinkSignal = () => {};
    this.context.dispose();
    this.transport.release(this.streamId);
    this.firstResponse = undefined;
    this.hooks.onSettled?.(outcome);
    const waiter = this.waiter;
    if (waiter === undefined || this.head < this.items.length) return;
    this.waiter = undefined;
    if (this.state === "ended") waiter.resolve({ value: undefined, done: true });
    else waiter.reject(this.failure);
  }
}

function toCancelled(reason: unknown): TdistError {
  if (reason instanceof TdistError) return reason;
  return new TdistError("cancelled", "request cancelled", { cause: reason });
}
