/**
 * The discovery seam: a key-value store with leases and gap-free prefix
 * watches. `memory` serves embedded mode (several runtimes in one process can
 * share one store); `etcd` serves cluster mode.
 */

/** One stored key. Values are JSON text (docs/architecture.md, "Discovery key layout"). */
export interface KeyValue {
  key: string;
  value: string;
  /** Lease the key is attached to, as lower-case hex, when it has one. */
  leaseId?: string;
}

export type WatchEvent = { type: "put"; key: string; value: string } | { type: "delete"; key: string };

/**
 * A prefix watch: `initial` holds the keys present when the watch started and
 * iterating yields every change after that snapshot, with nothing lost between
 * them. Ends when the signal aborts or `return()` is called; fails when the
 * backend cannot continue the watch.
 */
export interface PrefixWatch extends AsyncIterable<WatchEvent> {
  readonly initial: readonly KeyValue[];
  close(): void;
}

/**
 * A lease that the discovery backend keeps alive (keep-alive at TTL/3) until
 * revoked. Keys put with a lease disappear when it ends. If the backend loses
 * the lease (server restart, expiry during a partition) it grants a new one
 * and puts the lease's keys again, keeping `id` where the backend allows it;
 * `lost` fires only when that is impossible.
 */
export interface Lease {
  /** 64-bit lease id as lower-case hex. The runtime uses it as its instance id. */
  readonly id: string;
  readonly ttlMs: number;
  /** Aborts when the lease is gone for good (revoked, or lost and not recoverable). */
  readonly lost: AbortSignal;
  revoke(): Promise<void>;
}

export interface PutOptions {
  lease?: Lease;
}

export interface WatchOptions {
  signal?: AbortSignal;
}

export interface Discovery {
  readonly kind: "memory" | "etcd";
  grantLease(ttlMs: number): Promise<Lease>;
  put(key: string, value: string, options?: PutOptions): Promise<void>;
  /** Creates the key only if it does not exist; returns false when it did. */
  create(key: string, value: string, options?: PutOptions): Promise<boolean>;
  get(key: string): Promise<string | undefined>;
  delete(key: string): Promise<void>;
  list(prefix: string): Promise<KeyValue[]>;
  watchPrefix(prefix: string, options?: WatchOptions): Promise<PrefixWatch>;
  close(): Promise<void>;
}
