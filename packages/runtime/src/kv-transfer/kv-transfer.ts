import type { ErrorCode } from "../errors/error-codes.js";
import { TdistError } from "../errors/tdist-error.js";

/**
 * How to reach the runtime that offered a transfer. A fetch in the process
 * named by `local` is a direct hand-off of the chunks; anywhere else it dials
 * `tcp`. At least one is set.
 */
export interface KvTransferAddress {
  /** Process-unique id of the offering plane. */
  local?: string;
  /** `host:port` of the offering plane's own TCP listener (not the request plane's). */
  tcp?: string;
}

/**
 * What the receiver needs to fetch a transfer: plain JSON, so it travels in a
 * response to the frontend and then inside the decode request.
 */
export interface KvTransferHandle {
  transferId: string;
  address: KvTransferAddress;
  /** Exact number of bytes the fetch yields. */
  byteCount: number;
  /** `crc32:` and 8 lower-case hex digits, over all the bytes in order. */
  checksum: string;
}

export type KvChunks = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/**
 * Bytes produced lazily, e.g. a state file read in chunks. `byteCount` is
 * required up front: the handle is returned before any byte is read, and the
 * receiver checks it (and may refuse a transfer too large for it) without a
 * pass over the data. `checksum` may be given when the producer already has
 * one; without it `offer` reads the chunks once to compute it, so `chunks`
 * must then be a function that opens a fresh iterable on each call.
 * Chunks must not be reused or mutated after they are yielded.
 */
export interface KvTransferStreamSource {
  byteCount: number;
  checksum?: string;
  /** The chunks, or a function opening them; `signal` aborts when the transfer ends early. */
  chunks: KvChunks | ((signal: AbortSignal) => KvChunks);
}

/** Bytes in memory (one buffer or a list of chunks), or a lazy stream of them. */
export type KvTransferSource = Uint8Array | readonly Uint8Array[] | KvTransferStreamSource;

/** How an offer ended. */
export type KvOfferResult =
  /** Every byte was handed to the receiver (the receiver still verifies them). */
  | "sent"
  /** A fetch started and ended early: receiver gone, source failed, fetch cancelled. */
  | "failed"
  /** Nobody fetched it within `ttlMs`. */
  | "expired"
  /** `release()`, the offer's `signal`, or the plane's shutdown released it. */
  | "released";

export interface KvOfferOutcome {
  result: KvOfferResult;
  /** Bytes handed to the receiver before the offer ended. */
  bytesSent: number;
  /** Why a `failed` or `released` offer ended. */
  error?: TdistError;
}

export interface KvOfferOptions {
  /**
   * How long the offer waits for its fetch, after which it is released (a
   * dead decode worker must not leak the prefill worker's state). Once a
   * fetch has started only the fetch's own timeout applies. Default:
   * `TDIST_KV_TRANSFER_TTL_MS` (60 s).
   */
  ttlMs?: number;
  /** Releases the offer, and aborts a transfer in progress (the receiver sees `kv_transfer_failed`). */
  signal?: AbortSignal;
  /** Runs once when the offer is released for any reason, e.g. to delete a temp file. Awaited by `release()`. */
  onRelease?: (outcome: KvOfferOutcome) => void | Promise<void>;
}

export type KvOfferState = "offered" | "transferring" | "released";

/**
 * The sender's side of one transfer. An offer serves exactly one fetch: it
 * is released when that fetch completes or fails, so the sender frees its
 * state as soon as it can. A receiver that failed prefills locally instead
 * of retrying.
 */
export interface KvTransferOffer extends AsyncDisposable {
  readonly handle: KvTransferHandle;
  readonly state: KvOfferState;
  /** Resolves when the offer is released (after `onRelease` ran), with how it ended; never rejects. */
  readonly settled: Promise<KvOfferOutcome>;
  /** Withdraws the offer (aborting a transfer in progress); resolves once `onRelease` ran. Idempotent. */
  release(): Promise<void>;
}

export interface KvFetchOptions {
  /** Cancels the fetch (`cancelled`); the sender stops promptly and releases the offer. */
  signal?: AbortSignal;
  /** Deadline for the whole fetch, connect to last byte (`timeout`). Default: `TDIST_KV_TRANSFER_TIMEOUT_MS` (60 s). */
  timeoutMs?: number;
}

/**
 * Moves opaque bytes (a KV cache) from one runtime to another: the pull model.
 * The sender offers the bytes and gets a handle; the receiver fetches with
 * the handle. Bytes flow as a chunked stream with backpressure (a slow
 * consumer pauses the sender's source; neither side buffers more than a few
 * socket buffers), unbounded by the request plane's frame size. The receiver
 * verifies the byte count and the checksum before the iteration ends.
 *
 * Backends: `tcp` (its own listener, opened on the first offer) and `local`
 * (no sockets). A fetch in the process that offered is always a direct
 * hand-off, whatever the backend.
 *
 * Errors end the fetch's iteration as `TdistError`s: `kv_transfer_not_found`
 * (unknown, expired, already fetched), `kv_transfer_failed` (truncated, sender
 * died or withdrew, source failed), `kv_transfer_checksum` (count or checksum
 * mismatch), `cannot_connect`, `timeout`, `cancelled` (the receiver's own
 * signal) and `bad_request` (a malformed handle). `isKvTransferFallback(err)`
 * tells the cases where prefilling locally is the answer.
 *
 * ```ts
 * // prefill worker
 * const offer = await runtime.kvTransfer.offer(
 *   { byteCount: size, chunks: () => createReadStream(statePath) },
 *   { ttlMs: 30_000, onRelease: () => rm(statePath, { force: true }) },
 * );
 * yield { kvTransfer: offer.handle };
 *
 * // decode worker
 * try {
 *   const out = createWriteStream(importPath);
 *   for await (const chunk of runtime.kvTransfer.fetch(request.kvTransfer, { signal: ctx.signal, timeoutMs: 10_000 })) {
 *     if (!out.write(chunk)) await once(out, "drain");
 *   }
 * } catch (err) {
 *   if (!isKvTransferFallback(err)) throw err;
 *   // prefill locally
 * }
 * ```
 */
export interface KvTransferPlane {
  readonly kind: "tcp" | "local";
  /** Registers the bytes for one fetch and returns the offer; its handle is what the receiver needs. */
  offer(source: KvTransferSource, options?: KvOfferOptions): Promise<KvTransferOffer>;
  /** The offered bytes, in order; the work starts on the first `next()`. `break` releases the sender. */
  fetch(handle: KvTransferHandle, options?: KvFetchOptions): AsyncIterable<Uint8Array>;
  /** Offers not yet released. */
  readonly openOffers: number;
  /** Closes the listener and releases every open offer, aborting transfers in progress. */
  close(): Promise<void>;
}

const fallbackCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "kv_transfer_not_found",
  "kv_transfer_failed",
  "kv_transfer_checksum",
  "cannot_connect",
  "timeout",
  "shutting_down",
]);

/**
 * True when a fetch failed in a way a receiver answers by computing the KV
 * itself (prefilling locally): the transfer is gone, broken, late or
 * unreachable. False for `cancelled` (the request itself ended), a malformed
 * handle and anything unexpected, which are not to be papered over.
 */
export function isKvTransferFallback(err: unknown): boolean {
  return err instanceof TdistError && fallbackCodes.has(err.code);
}
