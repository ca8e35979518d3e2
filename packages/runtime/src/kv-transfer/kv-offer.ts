import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import { abortPromise } from "../util/abort.js";
import { asyncIteratorOf, type ResolvedKvSource } from "./kv-source.js";
import type {
  KvOfferOptions,
  KvOfferOutcome,
  KvOfferResult,
  KvOfferState,
  KvTransferHandle,
  KvTransferOffer,
} from "./kv-transfer.js";

/**
 * One offer's lifecycle: `offered` (ttl running) → `transferring` (one
 * fetch claimed it) → `released`. Whatever ends it runs `onRelease` once.
 */
export class KvOffer implements KvTransferOffer {
  private stateValue: KvOfferState = "offered";
  private readonly transfer = new AbortController();
  private readonly ttlTimer: NodeJS.Timeout;
  private bytesSent = 0;
  private streamStarted = false;
  private releasedAs: { result: KvOfferResult; error: TdistError } | undefined;
  private settling: Promise<KvOfferOutcome> | undefined;
  private resolveSettled!: (outcome: KvOfferOutcome) => void;
  readonly settled: Promise<KvOfferOutcome>;

  constructor(
    readonly handle: KvTransferHandle,
    private readonly source: ResolvedKvSource,
    ttlMs: number,
    private readonly options: KvOfferOptions,
    private readonly logger: Logger,
    private readonly onSettled: (offer: KvOffer) => void,
  ) {
    this.settled = new Promise((resolve) => {
      this.resolveSettled = resolve;
    });
    this.ttlTimer = setTimeout(
      () => this.withdraw("expired", new TdistError("kv_transfer_not_found", `offer expired after ${ttlMs} ms`)),
      ttlMs,
    );
    this.ttlTimer.unref();
    options.signal?.addEventListener("abort", this.onSignal, { once: true });
    if (options.signal?.aborted) this.onSignal();
  }

  get state(): KvOfferState {
    return this.stateValue;
  }

  /** Claims the offer for the one fetch it serves; false when it is taken or released. */
  claim(): boolean {
    if (this.stateValue !== "offered") return false;
    this.stateValue = "transferring";
    clearTimeout(this.ttlTimer);
    return true;
  }

  /**
   * The source's chunks, for a claimed offer. Ends the offer when it ends:
   * `sent` after the last chunk, `failed` on an error or an early `return()`.
   * A withdrawn offer throws its reason out of the pending `next()`.
   */
  async *stream(): AsyncGenerator<Uint8Array, void, undefined> {
    this.streamStarted = true;
    const { byteCount } = this.source;
    const aborted = abortPromise(this.transfer.signal);
    let iterator: AsyncIterator<Uint8Array> | Iterator<Uint8Array> | undefined;
    let complete = false;
    let failure: TdistError | undefined;
    try {
      iterator = asyncIteratorOf(this.source.open(this.transfer.signal));
      for (;;) {
        // Checked by hand too: a sync source's value would win the race against an abort already made.
        if (this.transfer.signal.aborted) throw this.transfer.signal.reason;
        const next = await Promise.race([iterator.next(), aborted.promise]);
        if (this.transfer.signal.aborted) throw this.transfer.signal.reason;
        if (next.done) break;
        const chunk = next.value;
        if (!(chunk instanceof Uint8Array))
          throw new TdistError("kv_transfer_failed", "source yielded a non-Uint8Array");
        if (chunk.byteLength === 0) continue;
        if (this.bytesSent + chunk.byteLength > byteCount) {
          throw new TdistError("kv_transfer_failed", `source yielded more than its byteCount (${byteCount})`);
        }
        this.bytesSent += chunk.byteLength;
        yield chunk;
      }
      if (this.bytesSent !== byteCount) {
        throw new TdistError("kv_transfer_failed", `source ended after ${this.bytesSent} of ${byteCount} bytes`);
      }
      complete = true;
    } catch (err) {
      failure = senderFailure(err);
      throw failure;
    } finally {
      aborted.dispose();
      if (!complete && iterator?.return) {
        // A source stuck in its own `return()` must not hold the release.
        Promise.resolve(iterator.return()).catch(() => {});
      }
      failure ??= complete ? undefined : new TdistError("kv_transfer_failed", "the receiver stopped reading");
      void this.settle(complete ? "sent" : "failed", failure);
    }
  }

  /** Ends the transfer of a claimed offer from outside (receiver gone, connection lost). */
  abortTransfer(reason: TdistError): void {
    if (this.streamStarted) this.transfer.abort(reason);
    else void this.settle("failed", reason);
  }

  release(): Promise<void> {
    return this.withdraw("released", new TdistError("kv_transfer_failed", "offer released by the sender")).then(
      () => {},
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** Releases now: an offer still waiting settles at once; a transfer is aborted and settles as its stream ends. */
  withdraw(result: KvOfferResult, error: TdistError): Promise<KvOfferOutcome> {
    if (this.stateValue === "transferring") {
      this.releasedAs ??= { result, error };
      this.abortTransfer(error);
      return this.settled;
    }
    return this.settle(result, error);
  }

  private readonly onSignal = (): void => {
    const reason = this.options.signal?.reason;
    const message = reason instanceof Error ? reason.message : "offer signal aborted";
    void this.withdraw("released", new TdistError("kv_transfer_failed", `offer cancelled by the sender: ${message}`));
  };

  private settle(result: KvOfferResult, error: TdistError | undefined): Promise<KvOfferOutcome> {
    this.settling ??= this.runSettle(result, error);
    return this.settling;
  }

  private async runSettle(result: KvOfferResult, error: TdistError | undefined): Promise<KvOfferOutcome> {
    this.stateValue = "released";
    clearTimeout(this.ttlTimer);
    this.options.signal?.removeEventListener("abort", this.onSignal);
    this.transfer.abort(error ?? new TdistError("kv_transfer_failed", "offer released"));
    const released = this.releasedAs;
    const outcome: KvOfferOutcome = {
      result: result === "failed" && released ? released.result : result,
      bytesSent: this.bytesSent,
      ...(error && result !== "sent" ? { error: released?.error ?? error } : {}),
    };
    this.onSettled(this);
    try {
      await this.options.onRelease?.(outcome);
    } catch (err) {
      this.logger.warn({ err, transferId: this.handle.transferId }, "KV transfer onRelease hook failed");
    }
    this.resolveSettled(outcome);
    return outcome;
  }
}

/** What a receiver is told about an error on the sender's side. */
export function senderFailure(err: unknown): TdistError {
  if (TdistError.is(err, "kv_transfer_failed") || TdistError.is(err, "kv_transfer_not_found")) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new TdistError("kv_transfer_failed", `transfer ended by the sender: ${message}`, { cause: err });
}
