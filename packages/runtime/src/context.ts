import { TdistError } from "./errors/tdist-error.js";
import { newRequestId } from "./util/ids.js";

type Listener = (reason: unknown) => void;

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
 *
 * The AbortSignals are created on first access: most requests never need
 * one, and the transports follow cancellation through `onKill`/`onStop`.
 */
export class Context {
  readonly requestId: string;
  readonly annotations: Readonly<Record<string, string>>;
  private killed = false;
  private stopped = false;
  private reason: unknown;
  private killController: AbortController | undefined;
  private stopController: AbortController | undefined;
  private killListeners: Set<Listener> | undefined;
  private stopListeners: Set<Listener> | undefined;
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
    if (!this.killController) {
      this.killController = new AbortController();
      if (this.killed) this.killController.abort(this.reason);
    }
    return this.killController.signal;
  }

  /** Aborts when the request is stopped or killed: the handler should wrap up. */
  get stopSignal(): AbortSignal {
    if (!this.stopController) {
      this.stopController = new AbortController();
      if (this.stopped) this.stopController.abort(this.reason);
    }
    return this.stopController.signal;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  get isKilled(): boolean {
    return this.killed;
  }

  /** Why the request was stopped or killed. */
  get cancelReason(): unknown {
    return this.reason;
  }

  /** Graceful: the handler should finish and end its stream normally. */
  stopGenerating(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.reason ??= new TdistError("cancelled", "request stopped");
    this.stopController?.abort(this.reason);
    notify(this.stopListeners, this.reason);
  }

  /** Immediate: abort everything now. */
  kill(reason: unknown = new TdistError("cancelled", "request killed")): void {
    if (this.killed) return;
    this.killed = true;
    if (!this.stopped) {
      this.stopped = true;
      this.reason = reason;
      this.stopController?.abort(reason);
      notify(this.stopListeners, reason);
    } else {
      this.reason = reason;
    }
    this.killController?.abort(reason);
    notify(this.killListeners, reason);
    this.unlinkParent?.();
  }

  /** Calls `listener` once when the request is killed; returns a function that removes it. */
  onKill(listener: Listener): () => void {
    this.killListeners ??= new Set();
    this.killListeners.add(listener);
    return () => this.killListeners?.delete(listener);
  }

  /** Calls `listener` once when the request is stopped (or killed); returns a function that removes it. */
  onStop(listener: Listener): () => void {
    this.stopListeners ??= new Set();
    this.stopListeners.add(listener);
    return () => this.stopListeners?.delete(listener);
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
      this.kill(parent.reason);
      return;
    }
    if (parent.isStopped) this.stopGenerating();
    const removeStop = parent.onStop(() => this.stopGenerating());
    const removeKill = parent.onKill((reason) => this.kill(reason));
    this.unlinkParent = () => {
      removeStop();
      removeKill();
      this.unlinkParent = undefined;
    };
  }
}

function notify(listeners: Set<Listener> | undefined, reason: unknown): void {
  if (!listeners) return;
  for (const listener of [...listeners]) listener(reason);
  listeners.clear();
}
