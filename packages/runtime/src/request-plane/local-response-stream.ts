import { Context } from "../context.js";
import { TdistError } from "../errors/tdist-error.js";
import {
  type Handler,
  type ResponseStream,
  STREAM_COMPLETED,
  STREAM_RETURNED,
  type StreamOutcome,
} from "../handler.js";
import { handlerErrorToWire } from "./handler-run.js";
import type { ServedHandler, StreamHooks } from "./request-plane.js";

/** Shared reason for `break`/`return()` (no per-request stack trace on this hot path). */
const CALLER_STOPPED_READING = new TdistError("cancelled", "caller stopped reading");

type Waiter<T> = { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void };

/**
 * The local plane: the caller pulls the handler's generator directly, with
 * no serialization, in the same process and runtime. Backpressure is
 * implicit (nothing runs ahead of the caller); stop, kill, `break` and
 * handler errors behave as on the TCP plane.
 */
export class LocalResponseStream<T> implements ResponseStream<T> {
  private readonly handlerContext: Context;
  private iterator: AsyncIterator<unknown> | undefined;
  private state: "open" | "ended" | "failed" = "open";
  private failure: unknown;
  private waiter: Waiter<T> | undefined;
  private readonly run: { kill(reason?: unknown): void; readonly done: boolean };
  private unlinkCaller: () => void;
  private firstResponse: (() => void) | undefined;

  constructor(
    readonly instanceId: string,
    private readonly entry: ServedHandler,
    private readonly request: unknown,
    private readonly callerContext: Context,
    private readonly hooks: StreamHooks = {},
  ) {
    this.firstResponse = hooks.onFirstResponse;
    this.handlerContext = new Context({ requestId: callerContext.requestId, annotations: callerContext.annotations });
    const self = this;
    this.run = {
      kill: (reason) => self.kill(reason),
      get done() {
        return self.state !== "open";
      },
    };
    entry.inFlight.add(this.run);
    const removeKill = callerContext.onKill((reason) => this.kill(reason));
    const removeStop = callerContext.onStop(() => this.stop());
    this.unlinkCaller = () => {
      removeKill();
      removeStop();
    };
    if (callerContext.isKilled) this.kill(callerContext.cancelReason);
  }

  get requestId(): string {
    return this.callerContext.requestId;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.state === "ended") return Promise.resolve({ value: undefined, done: true });
    if (this.state === "failed") return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new TdistError("bad_request", "next() called while another is pending"));
    let iterator = this.iterator;
    if (iterator === undefined) {
      try {
        iterator = (this.entry.handler as Handler<unknown, unknown>)(this.request, this.handlerContext)[
          Symbol.asyncIterator
        ]();
        this.iterator = iterator;
      } catch (err) {
        this.fail(TdistError.fromWire(handlerErrorToWire(err)));
        return Promise.reject(this.failure);
      }
    }
    const pending = new Promise<IteratorResult<T>>((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
    iterator.next().then(
      (result) => {
        const waiter = this.waiter;
        this.waiter = undefined;
        if (this.state !== "open") return;
        if (result.done) {
          this.iterator = undefined;
          this.finish("ended", undefined, STREAM_COMPLETED);
          waiter?.resolve({ value: undefined, done: true });
        } else {
          const first = this.firstResponse;
          if (first !== undefined) {
            this.firstResponse = undefined;
            first();
          }
          waiter?.resolve({ value: result.value as T, done: false });
        }
      },
      (err: unknown) => {
        const waiter = this.waiter;
        this.waiter = undefined;
        this.iterator = undefined;
        if (this.state !== "open") return;
        this.fail(TdistError.fromWire(handlerErrorToWire(err)));
        waiter?.reject(this.failure);
      },
    );
    return pending;
  }

  return(): Promise<IteratorResult<T>> {
    if (this.state === "open") {
      this.handlerContext.kill(CALLER_STOPPED_READING);
      this.finish("ended", undefined, STREAM_RETURNED);
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  stop(): void {
    if (this.state === "open") this.handlerContext.stopGenerating();
  }

  kill(reason?: unknown): void {
    if (this.state !== "open") return;
    const error =
      reason instanceof TdistError ? reason : new TdistError("cancelled", "request killed", { cause: reason });
    this.handlerContext.kill(error);
    this.finish("failed", error, { status: "cancelled", error });
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private fail(error: TdistError): void {
    this.finish("failed", error, { status: "failed", error });
  }

  private finish(state: "ended" | "failed", failure: unknown, outcome: StreamOutcome): void {
    this.state = state;
    this.failure = failure;
    this.unlinkCaller();
    this.unlinkCaller = () => {};
    this.callerContext.dispose();
    this.handlerContext.dispose();
    this.entry.inFlight.delete(this.run);
    this.firstResponse = undefined;
    this.hooks.onSettled?.(outcome);
    const iterator = this.iterator;
    this.iterator = undefined;
    if (iterator?.return) {
      // A generator that is mid-step runs its `finally` as soon as that step settles.
      iterator.return().then(
        () => {},
        () => {},
      );
    }
  }
}
