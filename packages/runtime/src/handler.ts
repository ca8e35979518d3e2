import type { Context } from "./context.js";

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
  /** Graceful: ask the handler to finish; keep iterating to read the rest. */
  stop(): void;
  /** Immediate: end the stream now; a pending `next()` rejects with `cancelled`. */
  kill(reason?: unknown): void;
}
