import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import type { TcpTls } from "../request-plane/tcp-tls.js";
import { toAbortError } from "../util/abort.js";
import { randomId64 } from "../util/ids.js";
import { isChecksum, KvChecksum } from "./kv-checksum.js";
import { KvOffer } from "./kv-offer.js";
import { resolveKvSource } from "./kv-source.js";
import type {
  KvFetchOptions,
  KvOfferOptions,
  KvTransferHandle,
  KvTransferOffer,
  KvTransferPlane,
  KvTransferSource,
} from "./kv-transfer.js";
import { localKvFetch } from "./local-kv-fetch.js";
import { tcpKvFetch } from "./tcp-kv-fetch.js";
import { TcpKvListener } from "./tcp-kv-listener.js";

export type KvTransferBackendOptions =
  | { kind: "tcp"; host: string; port: number; advertiseHost: string }
  | { kind: "local" };

export interface KvTransferPlaneOptions {
  backend: KvTransferBackendOptions;
  /** Default `ttlMs` of an offer. */
  ttlMs: number;
  /** Default `timeoutMs` of a fetch. */
  fetchTimeoutMs: number;
  connectTimeoutMs: number;
  /** Mutual TLS for the listener and for fetches from other processes (the request plane's `TDIST_TCP_TLS_*`). */
  tls?: TcpTls | undefined;
  logger: Logger;
}

/** Every open plane of this process by its id: a fetch addressed to one of them is a direct hand-off. */
const processPlanes = new Map<string, RuntimeKvTransferPlane>();

/**
 * The runtime's KV transfer plane (see `KvTransferPlane`). A runtime makes
 * one; tests may make more.
 */
export class RuntimeKvTransferPlane implements KvTransferPlane {
  readonly kind: "tcp" | "local";
  private readonly id = `kv-${randomId64()}`;
  private readonly offers = new Map<string, KvOffer>();
  private readonly listener: TcpKvListener | undefined;
  private closed = false;

  constructor(private readonly options: KvTransferPlaneOptions) {
    this.kind = options.backend.kind;
    if (options.backend.kind === "tcp") {
      this.listener = new TcpKvListener({
        ...options.backend,
        requestTimeoutMs: options.connectTimeoutMs,
        tls: options.tls,
        logger: options.logger,
        claim: (transferId) => this.claim(transferId),
      });
    }
    processPlanes.set(this.id, this);
  }

  get openOffers(): number {
    return this.offers.size;
  }

  async offer(source: KvTransferSource, options: KvOfferOptions = {}): Promise<KvTransferOffer> {
    this.assertOpen();
    const ttlMs = options.ttlMs ?? this.options.ttlMs;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new TdistError("invalid_option", `option ttlMs must be a positive number of ms, got ${String(ttlMs)}`);
    }
    const signal = options.signal ?? new AbortController().signal;
    if (signal.aborted) throw toAbortError(signal.reason);
    const resolved = await resolveKvSource(source, signal);
    const tcp = await this.listener?.listen();
    this.assertOpen();
    const handle: KvTransferHandle = {
      transferId: randomId64(),
      address: { local: this.id, ...(tcp ? { tcp } : {}) },
      byteCount: resolved.byteCount,
      checksum: resolved.checksum,
    };
    const offer = new KvOffer(handle, resolved, ttlMs, options, this.options.logger, (settled) =>
      this.offers.delete(settled.handle.transferId),
    );
    if (offer.state === "offered") this.offers.set(handle.transferId, offer);
    return offer;
  }

  fetch(handle: KvTransferHandle, options: KvFetchOptions = {}): AsyncIterable<Uint8Array> {
    return this.fetchStream(handle, options);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    processPlanes.delete(this.id);
    const shutdown = new TdistError("kv_transfer_failed", "the sender's runtime is shutting down");
    await Promise.all([...this.offers.values()].map((offer) => offer.withdraw("released", shutdown)));
    await this.listener?.close();
  }

  private claim(transferId: string): KvOffer | undefined {
    const offer = this.offers.get(transferId);
    return offer?.claim() ? offer : undefined;
  }

  private async *fetchStream(handle: KvTransferHandle, options: KvFetchOptions): AsyncGenerator<Uint8Array> {
    validateHandle(handle);
    const timeoutMs = options.timeoutMs ?? this.options.fetchTimeoutMs;
    const controller = new AbortController();
    const parent = options.signal;
    const onParentAbort = (): void => controller.abort(parent?.reason);
    if (parent?.aborted) controller.abort(parent.reason);
    else parent?.addEventListener("abort", onParentAbort, { once: true });
    const timer = setTimeout(
      () => controller.abort(new TdistError("timeout", `KV transfer fetch timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      if (controller.signal.aborted) throw toAbortError(controller.signal.reason);
      yield* verified(handle, this.open(handle, controller.signal));
    } catch (err) {
      if (controller.signal.aborted) throw toAbortError(controller.signal.reason);
      throw err;
    } finally {
      clearTimeout(timer);
      parent?.removeEventListener("abort", onParentAbort);
    }
  }

  private open(handle: KvTransferHandle, signal: AbortSignal): AsyncIterable<Uint8Array> {
    const { local, tcp } = handle.address;
    const plane = local === undefined ? undefined : processPlanes.get(local);
    if (plane !== undefined) {
      const offer = plane.claim(handle.transferId);
      if (offer === undefined) {
        throw new TdistError(
          "kv_transfer_not_found",
          `KV transfer ${handle.transferId} is not offered (expired or fetched)`,
        );
      }
      return localKvFetch(offer, signal);
    }
    if (tcp === undefined) {
      throw new TdistError(
        "kv_transfer_not_found",
        `KV transfer ${handle.transferId} was offered by a runtime that is gone or in another process without a TCP address`,
      );
    }
    return tcpKvFetch(tcp, handle.transferId, this.options.connectTimeoutMs, signal, this.options.tls);
  }

  private assertOpen(): void {
    if (this.closed) throw new TdistError("shutting_down", "the KV transfer plane is closed");
  }
}

/** Counts and checksums the chunks as they pass; a stream that disagrees with its handle ends in `kv_transfer_checksum`. */
async function* verified(handle: KvTransferHandle, chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const checksum = new KvChecksum();
  let received = 0;
  for await (const chunk of chunks) {
    received += chunk.byteLength;
    if (received > handle.byteCount) {
      throw new TdistError(
        "kv_transfer_checksum",
        `KV transfer ${handle.transferId} sent more than ${handle.byteCount} bytes`,
      );
    }
    checksum.update(chunk);
    yield chunk;
  }
  if (received !== handle.byteCount) {
    throw new TdistError(
      "kv_transfer_checksum",
      `KV transfer ${handle.transferId} ended after ${received} of ${handle.byteCount} bytes`,
    );
  }
  const digest = checksum.digest();
  if (digest !== handle.checksum) {
    throw new TdistError(
      "kv_transfer_checksum",
      `KV transfer ${handle.transferId} checksum ${digest} does not match ${handle.checksum}`,
    );
  }
}

function validateHandle(handle: KvTransferHandle): void {
  const h = handle as Partial<KvTransferHandle> | null | undefined;
  const valid =
    typeof h === "object" &&
    h !== null &&
    typeof h.transferId === "string" &&
    h.transferId.length > 0 &&
    typeof h.address === "object" &&
    h.address !== null &&
    (typeof h.address.local === "string" || typeof h.address.tcp === "string") &&
    Number.isSafeInteger(h.byteCount) &&
    (h.byteCount as number) >= 0 &&
    isChecksum(h.checksum);
  if (!valid) throw new TdistError("bad_request", `malformed KV transfer handle ${JSON.stringify(handle)}`);
}
