import type { ResponseStream } from "../handler.js";

/** A stream that could not be opened: its first `next()` rejects with the error. */
export class FailedResponseStream<T> implements ResponseStream<T> {
  private consumed = false;

  constructor(
    readonly requestId: string,
    private readonly error: unknown,
    readonly instanceId = "",
  ) {}

  next(): Promise<IteratorResult<T>> {
    if (this.consumed) return Promise.resolve({ value: undefined, done: true });
    this.consumed = true;
    return Promise.reject(this.error);
  }

  return(): Promise<IteratorResult<T>> {
    this.consumed = true;
    return Promise.resolve({ value: undefined, done: true });
  }

  stop(): void {}

  kill(): void {
    this.consumed = true;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
