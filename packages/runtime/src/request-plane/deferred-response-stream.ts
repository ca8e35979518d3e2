import type { ResponseStream } from "../handler.js";

/**
 * A response stream whose transport is still being set up (a connection
 * opened on first use). Calls wait for the real stream; stop and kill made
 * before it exists are applied as soon as it does.
 */
export class DeferredResponseStream<T> implements ResponseStream<T> {
  private inner: ResponseStream<T> | undefined;
  private pendingStop = false;
  private pendingKill: { reason: unknown } | undefined;
  private returned = false;
  private readonly ready: Promise<ResponseStream<T>>;

  constructor(
    readonly requestId: string,
    readonly instanceId: string,
    open: Promise<ResponseStream<T>>,
  ) {
    this.ready = open.then((stream) => {
      this.inner = stream;
      if (this.pendingKill) stream.kill(this.pendingKill.reason);
      else if (this.returned) void stream.return?.();
      else if (this.pendingStop) stream.stop();
      return stream;
    });
    this.ready.catch(() => {});
  }

  async next(): Promise<IteratorResult<T>> {
    const stream = this.inner ?? (await this.ready);
    return stream.next();
  }

  async return(): Promise<IteratorResult<T>> {
    this.returned = true;
    if (this.inner?.return) await this.inner.return();
    return { value: undefined, done: true };
  }

  stop(): void {
    if (this.inner) this.inner.stop();
    else this.pendingStop = true;
  }

  kill(reason?: unknown): void {
    if (this.inner) this.inner.kill(reason);
    else this.pendingKill = { reason };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
