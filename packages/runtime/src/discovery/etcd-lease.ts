import {
  castGrpcError,
  type Etcd3,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  isRecoverableError,
} from "etcd3";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import type { Lease } from "./discovery.js";

/** etcd lease ids are int64 decimal strings on the wire; the runtime shows them as lower-case hex. */
export function leaseIdToHex(decimal: string): string {
  return BigInt.asUintN(64, BigInt(decimal)).toString(16);
}

export function leaseIdFromHex(hex: string): string {
  return BigInt.asIntN(64, BigInt(`0x${hex}`)).toString();
}

/** True for failures that may go away by themselves: etcd down, restarting, slow, or unreachable. */
export function isTransientEtcdError(err: unknown): boolean {
  if (TdistError.is(err, "timeout")) return true;
  if (err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError) return true;
  return typeof err === "object" && err !== null && isRecoverableError(err as Error);
}

function isLeaseAlreadyExists(err: unknown): boolean {
  return err instanceof Error && /lease already exists/i.test(err.message);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What a lease needs from the discovery handle that granted it. */
export interface EtcdLeaseContext {
  client: Etcd3;
  logger: Logger;
  /** Deadline of one etcd call; a keep-alive round trip gets at most one keep-alive interval. */
  requestTimeoutMs: number;
  /** Called once when the lease ends for good (revoked, abandoned or lost). */
  onEnded(lease: EtcdLease): void;
}

type KeyMode = "put" | "create";

interface TrackedKey {
  value: string;
  /** `create` keys are put back only if nobody else took the key meanwhile. */
  mode: KeyMode;
}

type LeaseState = "alive" | "recovering" | "ended";

/**
 * One etcd lease, kept alive by this process with a keep-alive every TTL/3
 * (one round trip on a short-lived stream, so each tick's outcome is known).
 *
 * When etcd no longer knows the lease (it lost its data, or the TTL ran out
 * while this process could not reach it) the lease is granted again with the
 * same id, and every key put with it is put again, with a warning logged.
 * `lost` aborts only on revoke, or when etcd refuses the lease for a reason
 * that retrying cannot fix. While etcd is unreachable the lease keeps trying;
 * etcd itself expires the keys after the TTL, so a dead or partitioned
 * instance never stays registered.
 */
export class EtcdLease implements Lease {
  readonly id: string;
  /** The id as etcd's decimal int64 string. */
  readonly etcdId: string;
  readonly ttlMs: number;
  readonly lost: AbortSignal;
  private readonly controller = new AbortController();
  private readonly keys = new Map<string, TrackedKey>();
  private readonly logger: Logger;
  private state: LeaseState = "alive";
  private timer: NodeJS.Timeout | undefined;
  private tickInFlight = false;
  private recovery: Promise<void> | undefined;
  private failingSince: number | undefined;

  private constructor(
    private readonly context: EtcdLeaseContext,
    etcdId: string,
    ttlSeconds: number,
  ) {
    this.etcdId = etcdId;
    this.id = leaseIdToHex(etcdId);
    this.ttlMs = ttlSeconds * 1000;
    this.lost = this.controller.signal;
    this.logger = context.logger;
    this.timer = setInterval(() => {
      this.tick().catch(() => {});
    }, this.keepAliveIntervalMs);
    this.timer.unref();
  }

  /**
   * Grants a lease of `ttlMs` rounded up to whole seconds (etcd TTLs are
   * seconds; etcd may raise a TTL below its minimum, and the granted TTL is
   * the one kept).
   */
  static async grant(context: EtcdLeaseContext, ttlMs: number): Promise<EtcdLease> {
    const ttlSeconds = Math.max(1, Math.ceil(ttlMs / 1000));
    const response = await context.client.leaseClient.leaseGrant({ TTL: ttlSeconds });
    const granted = Number(response.TTL);
    return new EtcdLease(context, response.ID, granted > 0 ? granted : ttlSeconds);
  }

  get keepAliveIntervalMs(): number {
    return Math.max(100, Math.floor(this.ttlMs / 3));
  }

  /** A keep-alive slower than this is given up, so the next tick can send a fresh one. */
  private get keepAliveTimeoutMs(): number {
    return Math.min(this.context.requestTimeoutMs, this.keepAliveIntervalMs);
  }

  get ended(): boolean {
    return this.state === "ended";
  }

  /** Fails with `lease_lost` when the lease can no longer carry keys. */
  assertUsable(): void {
    if (this.state === "ended") {
      throw new TdistError("lease_lost", `lease ${this.id} has ended`, { cause: this.lost.reason });
    }
  }

  /** Remembers a key put with this lease, so it can be put again after the lease is recovered. */
  trackKey(key: string, value: string, mode: KeyMode): void {
    this.keys.set(key, { value, mode });
  }

  untrackKey(key: string): void {
    this.keys.delete(key);
  }

  /** Keys this lease would put back after a recovery (for tests and diagnostics). */
  trackedKeys(): string[] {
    return [...this.keys.keys()];
  }

  /**
   * Grants the lease again under the same id and puts its keys back. Calls
   * made while a recovery runs share it. Rejects when etcd cannot be reached
   * (the next keep-alive tick tries again) or the lease is gone for good.
   */
  recover(reason: string): Promise<void> {
    if (this.state === "ended") {
      return Promise.reject(new TdistError("lease_lost", `lease ${this.id} has ended`, { cause: this.lost.reason }));
    }
    this.recovery ??= this.runRecovery(reason).finally(() => {
      this.recovery = undefined;
    });
    return this.recovery;
  }

  /** Revokes the lease: its keys are deleted and `lost` aborts. */
  async revoke(): Promise<void> {
    if (this.state === "ended") return;
    this.stopKeepAlive();
    this.state = "ended";
    try {
      await this.recovery?.catch(() => {});
      await this.context.client.leaseClient.leaseRevoke({ ID: this.etcdId });
    } catch (err) {
      if (!(err instanceof EtcdLeaseInvalidError)) {
        throw new TdistError(
          "discovery_error",
          `revoking lease ${this.id} failed (its keys expire after ${this.ttlMs} ms): ${messageOf(err)}`,
          { cause: err },
        );
      }
    } finally {
      this.end(new TdistError("lease_lost", `lease ${this.id} was revoked`));
    }
  }

  /**
   * Stops keep-alives without revoking, as a crashed process would: etcd
   * deletes the keys once the TTL runs out. `lost` aborts.
   */
  abandon(): void {
    if (this.state === "ended") return;
    this.stopKeepAlive();
    this.state = "ended";
    this.end(new TdistError("lease_lost", `lease ${this.id} was abandoned`));
  }

  private end(reason: TdistError): void {
    this.keys.clear();
    if (!this.controller.signal.aborted) this.controller.abort(reason);
    this.context.onEnded(this);
  }

  private stopKeepAlive(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    if (this.tickInFlight || this.state === "ended") return;
    this.tickInFlight = true;
    try {
      if (this.state === "recovering") {
        await this.recover("retrying an unfinished recovery");
        return;
      }
      const ttl = await this.keepAliveOnce();
      if (this.state !== "alive") return;
      if (ttl > 0) {
        this.noteHealthy();
        return;
      }
      await this.recover("etcd reports the lease expired or unknown");
    } catch (err) {
      this.noteFailure(err);
    } finally {
      this.tickInFlight = false;
    }
  }

  /** One keep-alive round trip; resolves with the remaining TTL in seconds (0: etcd does not know the lease). */
  private async keepAliveOnce(): Promise<number> {
    const stream = await this.context.client.leaseClient.leaseKeepAlive();
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.cancel();
        reject(new TdistError("timeout", `keep-alive of lease ${this.id} timed out`));
      }, this.keepAliveTimeoutMs);
      stream.on("data", (response) => {
        clearTimeout(timer);
        stream.end();
        resolve(Number(response.TTL));
      });
      stream.on("error", (err) => {
        clearTimeout(timer);
        reject(castGrpcError(err));
      });
      stream.write({ ID: this.etcdId });
    });
  }

  private noteHealthy(): void {
    if (this.failingSince === undefined) return;
    this.logger.info({ leaseId: this.id, downMs: Date.now() - this.failingSince }, "etcd lease keep-alive works again");
    this.failingSince = undefined;
  }

  private noteFailure(err: unknown): void {
    if (this.state === "ended") return;
    if (TdistError.is(err, "lease_lost")) return;
    if (this.failingSince !== undefined) return;
    this.failingSince = Date.now();
    this.logger.warn(
      { leaseId: this.id, error: messageOf(err), retryMs: this.keepAliveIntervalMs },
      "etcd lease keep-alive failed; retrying",
    );
  }

  private async runRecovery(reason: string): Promise<void> {
    if (this.state !== "recovering") {
      this.state = "recovering";
      this.logger.warn(
        { leaseId: this.id, keys: this.keys.size, reason },
        "etcd lost the lease; granting it again with the same id and re-registering its keys",
      );
    }
    try {
      await this.context.client.leaseClient.leaseGrant({ TTL: this.ttlMs / 1000, ID: this.etcdId });
    } catch (err) {
      // "Already exists": etcd holds this id again (an earlier attempt got through); carry on.
      if (!isLeaseAlreadyExists(err)) this.failRecovery(err);
    }
    for (const [key, tracked] of [...this.keys]) {
      if (this.ended) break;
      try {
        await this.putBack(key, tracked);
      } catch (err) {
        this.failRecovery(err);
      }
    }
    if (this.ended) {
      // Revoked while recovering: do not leave the re-granted lease behind.
      await this.context.client.leaseClient.leaseRevoke({ ID: this.etcdId }).catch(() => {});
      throw new TdistError("lease_lost", `lease ${this.id} has ended`, { cause: this.lost.reason });
    }
    this.state = "alive";
    this.failingSince = undefined;
    this.logger.warn(
      { leaseId: this.id, keys: this.keys.size },
      "etcd lease granted again with the same id; its keys are registered again",
    );
  }

  /** Transient failures leave the lease recovering (the next tick retries); others end it. */
  private failRecovery(err: unknown): never {
    if (this.state !== "ended" && !isTransientEtcdError(err) && !(err instanceof EtcdLeaseInvalidError)) {
      this.stopKeepAlive();
      this.state = "ended";
      const reason = new TdistError("lease_lost", `lease ${this.id} was lost and cannot be granted again`, {
        cause: err,
      });
      this.logger.error({ leaseId: this.id, error: messageOf(err) }, "etcd lease lost for good");
      this.end(reason);
      throw reason;
    }
    throw TdistError.wrap(err, "discovery_error", `recovering lease ${this.id}`);
  }

  private async putBack(key: string, tracked: TrackedKey): Promise<void> {
    const kv = this.context.client.kv;
    const keyBytes = Buffer.from(key);
    const put = { key: keyBytes, value: Buffer.from(tracked.value), lease: this.etcdId };
    if (tracked.mode === "put") {
      await kv.put(put);
      return;
    }
    const response = await kv.txn({
      compare: [{ key: keyBytes, target: "Version", result: "Equal", version: 0 }],
      success: [{ request_put: put }],
      failure: [{ request_range: { key: keyBytes } }],
    });
    if (response.succeeded) return;
    const holder = response.responses[0]?.response_range?.kvs[0]?.lease;
    if (holder === this.etcdId) return;
    this.keys.delete(key);
    this.logger.warn(
      { leaseId: this.id, key },
      "a key created with this lease was taken by someone else while the lease was gone; not re-registered",
    );
  }
}
