import type { Route } from "./client/route.js";
import type { Context } from "./context.js";
import type { TdistError } from "./errors/tdist-error.js";

/**
 * An endpoint handler: an async generator (or any async iterable) of
 * responses. Pulling is driven by the caller's credit, so a slow caller pauses
 * the handler instead of growing a buffer.
 *
 * ```ts
 * await endpoint.serve(async function* (req: { text: string }, ctx) {
 *   for (const word of req.text.split(" ")) {
 *     if (ctx.isStopped) return;
 *     yield word;
 *   }
 * });
 * ```
 */
export type Handler<Req = unknown, Resp = unknown> = (request: Req, ctx: Context) => AsyncIterable<Resp>;

/** A response stream as the caller sees it. `break` in `for await` kills the remote handler. */
export interface ResponseStream<T> extends AsyncIterableIterator<T> {
  readonly requestId: string;
  /** The instance serving the request (lower-case hex). */
  readonly instanceId: string;
  /** The route `Client.generate` picked for this stream (absent when routing itself failed). */
  readonly route?: Route;
  /** Graceful: ask the handler to finish; keep iterating to read the rest. */
  stop(): void;
  /** Immediate: end the stream now; a pending `next()` rejects with `cancelled`. */
  kill(reason?: unknown): void;
}

/**
 * How a response stream ended, on the caller's side: `completed` (the
 * handler finished, stopped or not), `cancelled` by the caller (`break`,
 * `kill`, an aborted signal, a timeout; `error` says why when it is known),
 * or `failed` from the far side or on the way there (a handler error, a lost
 * or refused connection, a codec error).
 */
export type StreamOutcome =
  | { readonly status: "completed" }
  | { readonly status: "cancelled"; readonly error?: TdistError }
  | { readonly status: "failed"; readonly error: TdistError };

/** Shared outcomes for the common endings (no allocation per stream). */
export const STREAM_COMPLETED: StreamOutcome = Object.freeze({ status: "completed" });
export const STREAM_RETURNED: StreamOutcome = Object.freeze({ status: "cancelled" });
