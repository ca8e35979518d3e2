import { TdistError } from "../errors/tdist-error.js";

/**
 * Runs `fn(signal)` with a signal that aborts when `parent` aborts or after
 * `timeoutMs`, removing its listeners afterwards. A timeout becomes a
 * `timeout` TdistError naming `what`.
 */
export async function withTimeout<T>(
  what: string,
  timeoutMs: number | undefined,
  parent: AbortSignal | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const onParentAbort = (): void => controller.abort(parent?.reason);
  if (parent?.aborted) controller.abort(parent.reason);
  else parent?.addEventListener("abort", onParentAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  if (timeoutMs !== undefined && Number.isFinite(timeoutMs)) {
    timer = setTimeout(
      () => controller.abort(new TdistError("timeout", `${what} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
  }
  const aborted = abortPromise(controller.signal);
  try {
    // Race so that the bound holds even when `fn` ignores its signal.
    return await Promise.race([fn(controller.signal), aborted.promise]);
  } finally {
    aborted.dispose();
    if (timer) clearTimeout(timer);
    parent?.removeEventListener("abort", onParentAbort);
  }
}

/** A promise that rejects when `signal` aborts; the listener is removed by `dispose`. */
export function abortPromise(signal: AbortSignal): { promise: Promise<never>; dispose: () => void } {
  let onAbort: () => void = () => {};
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(toAbortError(signal.reason));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  promise.catch(() => {});
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}

/** Normalises an abort reason into a TdistError (`cancelled` unless it already is one). */
export function toAbortError(reason: unknown): TdistError {
  if (reason instanceof TdistError) return reason;
  return new TdistError("cancelled", reason instanceof Error ? reason.message : "operation was cancelled", {
    cause: reason,
  });
}

/** Resolves after `ms`, or rejects when `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(toAbortError(signal.reason));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(toAbortError(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
