import type { ResponseStream, StreamOutcome } from "../handler.js";
import type { Logger } from "../logger.js";
import type { StreamHooks } from "../request-plane/request-plane.js";
import type { Route } from "./route.js";

/**
 * The stream `Client.generate` returns once a policy picked a route: it
 * carries the route and is the transport's {@link StreamHooks}, so the
 * route hears of the first response item as it arrives and is released
 * exactly once when the stream ends, however it ends. A hook that throws is
 * logged: thrown inside the transport's own bookkeeping it would leave that
 * half done. Items pass straight through (no per-item work here).
 */
export class RoutedResponseStream<T> implements ResponseStream<T>, StreamHooks {
  // Set by `attach` as soon as the transport opened the stream, before the caller sees this one.
  private inner!: ResponseStream<T>;
  private firstSeen = false;
  private settled = false;

  constructor(
    readonly route: Route,
    private readonly onRelease: (outcome: StreamOutcome) => void,
    private readonly logger: Logger,
  ) {}

  readonly onFirstResponse = (): void => {
    if (this.firstSeen || this.settled) return;
    this.firstSeen = true;
    if (this.route.onFirstResponse === undefined) return;
    try {
      this.route.onFirstResponse();
    } catch (err) {
      this.logger.error({ err, instanceId: this.route.instance.instanceId }, "route onFirstResponse failed");
    }
  };

  readonly onSettled = (outcome: StreamOutcome): void => {
    if (this.settled) return;
    this.settled = true;
    this.onRelease(outcome);
    if (this.route.release === undefined) return;
    try {
      this.route.release(outcome);
    } catch (err) {
      this.logger.error({ err, instanceId: this.route.instance.instanceId }, "route release failed");
    }
  };

  attach(inner: ResponseStream<T>): this {
    this.inner = inner;
    return this;
  }

  get requestId(): string {
    return this.inner.requestId;
  }

  get instanceId(): string {
    return this.inner.instanceId;
  }

  next(): Promise<IteratorResult<T>> {
    return this.inner.next();
  }

  return(): Promise<IteratorResult<T>> {
    return this.inner.return?.() ?? Promise.resolve({ value: undefined, done: true });
  }

  stop(): void {
    this.inner.stop();
  }

  kill(reason?: unknown): void {
    this.inner.kill(reason);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
