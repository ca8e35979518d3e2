import { TdistError } from "./errors/tdist-error.js";
import { newRequestId } from "./util/ids.js";

/**
 * The context of one request, on either side of the wire.
 *
 * Two cancellation levels, as in Dynamo: **stop** asks the handler to finish
 * gracefully (its stream still ends normally, e.g. with a final message);
 * **kill** ends the request at once: `signal` aborts, the handler's generator
 * is closed (its `finally` runs) and nothing more is delivered.
 *
 * A context made with a parent (`Context.child(parent)`) is stopped and killed
 * with it, so cancelling a request cancels every request it fanned out to.
 */
export class Context {
  readonly requestId: string;
  readonly annotations: Readonly<Record<string, string>>;
  private readonly killController = new AbortController();
  private readonly stopController = new AbortController();
  private unlinkParent: (() => void) | undefined;

  constructor(options: { requestId?: string; annotations?: Record<string, string>; parent?: Context } = {}) {
    this.requestId = options.requestId ?? newRequestId();
    this.annotations = options.annotations ?? {};
    if (options.parent) this.linkTo(options.parent);
  }

  /** A context cancelled together with `parent`. */
  static child(parent: Context, options: { requestId?: string; annotations?: Record<string, string> } = {}): Context {
    return new Context({ ...options, parent });
  }

  /** Aborts when the request is killed (caller gave up, disconnected, or shutdown expired). */
  get signal(): AbortSignal {
    return this.killController.signal;
  }

  /** Aborts when the request is stopped or killed: the handler should wrap up. */
  get stopSignal(): AbortSignal {
    return this.stopController.signal;
  }

  get isStopped(): boolean {
    return this.stopController.signal.aborted;
  }

  get isKilled(): boolean {
    return this.killController.signal.aborted;
  }

  /** Graceful: the handler should finish and end its stream normally. */
  stopGenerating(): void {
    if (!this.isStopped) this.stopController.abort(new TdistError("cancelled", "request stopped"));
  }

  /** Immediate: abort everything now. */
  kill(reason: unknown = new TdistError("cancelled", "request killed")): void {
    if (this.isKilled) return;
    if (!this.isStopped) this.stopController.abort(reason);
    this.killController.abort(reason);
    this.unlinkParent?.();
  }

  /** Kills this context when `signal` aborts; returns a function that removes the link. */
  killOn(signal: AbortSignal | undefined): () => void {
    if (signal === undefined) return () => {};
    if (signal.aborted) {
      this.kill(signal.reason);
      return () => {};
    }
    const onAbort = (): void => this.kill(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    return () => signal.removeEventListener("abort", onAbort);
  }

  /** Detaches from the parent; called when the request is finished. */
  dispose(): void {
    this.unlinkParent?.();
    this.unlinkParent = undefined;
  }

  private linkTo(parent: Context): void {
    if (parent.isKilled) {
      this.kill(parent.signal.reason);
      return;
    }
    if (parent.isStopped) this.stopGenerating();
    const onStop = (): void => this.stopGenerating();
    const onKill = (): void => this.kill(parent.signal.reason);
    parent.stopSignal.addEventListener("abort", onStop, { once: true });
    parent.signal.addEventListener("abort", onKill, { once: true });
    this.unlinkParent = () => {
      parent.stopSignal.removeEventListener("abort", onStop);
      parent.signal.removeEventListener("abort", onKill);
      this.unlinkParent = undefined;
    };
  }
}
