import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCUnauthenticatedError,
  type IOptions,
} from "etcd3";
import { TdistError } from "../errors/tdist-error.js";
import { type Logger, silentLogger } from "../logger.js";
import { causeText, waitForServer } from "../util/wait-for-server.js";
import type { Discovery, KeyValue, Lease, PrefixWatch, PutOptions, WatchOptions } from "./discovery.js";
import { EtcdLease, type EtcdLeaseContext } from "./etcd-lease.js";
import { EtcdPrefixWatch, listPrefix } from "./etcd-prefix-watch.js";
import {
  type EtcdAuthOptions,
  type EtcdTlsOptions,
  etcdClientSecurity,
  validateEtcdSecurity,
} from "./etcd-security.js";

export interface EtcdDiscoveryOptions {
  /** etcd client URLs, e.g. `["http://127.0.0.1:2379"]` (`TDIST_ETCD_ENDPOINTS`). */
  endpoints: readonly string[];
  /** User and password, for an etcd with auth enabled. Default: none. */
  auth?: EtcdAuthOptions;
  /** TLS (PEM files), with `https://` endpoints. Default: TLS only for https:// endpoints, system CAs. */
  tls?: EtcdTlsOptions;
  logger?: Logger;
  /**
   * How long `connect()` keeps trying to reach etcd, retrying with backoff
   * (etcd may start after this process), before failing with
   * `dependency_unavailable`. Default 5 000 ms.
   */
  dialTimeoutMs?: number;
  /** Deadline of each etcd call (get, put, keep-alive round trip...). Default 5 000 ms. */
  requestTimeoutMs?: number;
  /** Cancels `connect()` while it waits for etcd. */
  signal?: AbortSignal;
}

export interface ResolvedEtcdDiscoveryOptions {
  endpoints: string[];
  auth: EtcdAuthOptions | undefined;
  tls: EtcdTlsOptions | undefined;
  logger: Logger;
  dialTimeoutMs: number;
  requestTimeoutMs: number;
}

const defaults = { dialTimeoutMs: 5_000, requestTimeoutMs: 5_000 };

/** Applies defaults and validates, naming the offending option. */
export function resolveEtcdDiscoveryOptions(options: EtcdDiscoveryOptions): ResolvedEtcdDiscoveryOptions {
  const endpoints: unknown = options?.endpoints;
  if (!Array.isArray(endpoints) || endpoints.length === 0) {
    throw new TdistError("invalid_option", "endpoints: expected a non-empty array of etcd URLs (http://host:port)");
  }
  for (const endpoint of endpoints) {
    if (hasUserInfo(endpoint)) {
      // Never echo it: the text holds a password.
      throw new TdistError(
        "invalid_option",
        "endpoints: an etcd URL carries user:password@; give the user and password as auth options (TDIST_ETCD_USERNAME, TDIST_ETCD_PASSWORD)",
      );
    }
    if (!isEndpoint(endpoint)) {
      throw new TdistError(
        "invalid_option",
        `endpoints: ${JSON.stringify(endpoint)} is not an etcd URL; expected http://host:port or https://host:port`,
      );
    }
  }
  validateEtcdSecurity(endpoints as string[], options.auth, options.tls);
  return {
    endpoints: [...(endpoints as string[])],
    auth: options.auth === undefined ? undefined : { username: options.auth.username, password: options.auth.password },
    tls: options.tls === undefined ? undefined : { ...options.tls },
    logger: options.logger ?? silentLogger,
    dialTimeoutMs: positiveMs("dialTimeoutMs", options.dialTimeoutMs ?? defaults.dialTimeoutMs),
    requestTimeoutMs: positiveMs("requestTimeoutMs", options.requestTimeoutMs ?? defaults.requestTimeoutMs),
  };
}

function hasUserInfo(value: unknown): boolean {
  if (typeof value !== "string" || !value.includes("@")) return false;
  try {
    const url = new URL(value.includes("://") ? value : `http://${value}`);
    return url.username !== "" || url.password !== "";
  } catch {
    return true;
  }
}

function isEndpoint(value: unknown): boolean {
  if (typeof value !== "string" || value.length === 0) return false;
  try {
    const url = new URL(value.includes("://") ? value : `http://${value}`);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "" && url.pathname === "/";
  } catch {
    return false;
  }
}

function positiveMs(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new TdistError("invalid_option", `${name}: expected a positive number of milliseconds, got ${String(value)}`);
  }
  return value;
}

type FaultHandling = NonNullable<IOptions["faultHandling"]>;
type HostPolicy = ReturnType<NonNullable<FaultHandling["host"]>>;
type WatchBackoff = NonNullable<FaultHandling["watchBackoff"]>;

/*
 * etcd3's default per-host circuit breaker fails every call for 5 s after
 * three failures, which would delay recovery after an etcd restart by that
 * much. Leases and watches retry on their own schedule here, so calls go
 * straight through (the client's global retry still tries another endpoint).
 */
const passThroughPolicy = {
  onSuccess: () => ({ dispose: () => {} }),
  onFailure: () => ({ dispose: () => {} }),
  execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    fn({ signal: new AbortController().signal }),
} as unknown as HostPolicy;

/** Watch reconnects: 100 ms doubling to at most 1 s (etcd3's default grows to 30 s). */
function watchBackoff(durationMs: number): WatchBackoff {
  return { duration: durationMs, next: () => watchBackoff(Math.min(1_000, durationMs * 2)) } as WatchBackoff;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Discovery on etcd (v3 API): cluster mode's backend.
 *
 * - Each `grantLease` is one etcd lease, kept alive every TTL/3; keys put with
 *   it vanish when the holder stops (crash: after the TTL; close: at once).
 * - After etcd loses a lease (restart without its data, expiry while this
 *   process could not reach it) the lease is granted again under the same id
 *   and its keys are put again, with a warning logged; `lost` aborts only
 *   when that cannot work.
 * - `watchPrefix` lists, then watches from the listed revision + 1; watches
 *   survive etcd restarts, and re-list (emitting the difference) when etcd
 *   cannot replay what was missed.
 *
 * ```ts
 * const discovery = await EtcdDiscovery.connect({ endpoints: ["http://127.0.0.1:2379"], logger });
 * const lease = await discovery.grantLease(10_000);
 * await discovery.put(`v1/instances/tdist/backend/generate/${lease.id}`, JSON.stringify(info), { lease });
 * ```
 */
export class EtcdDiscovery implements Discovery {
  readonly kind = "etcd" as const;
  readonly endpoints: readonly string[];
  private readonly client: Etcd3;
  private readonly logger: Logger;
  private readonly requestTimeoutMs: number;
  private readonly leaseContext: EtcdLeaseContext;
  private readonly ownedLeases = new Set<EtcdLease>();
  /** Which of this handle's leases each leased key was last put with. */
  private readonly keyLeases = new Map<string, EtcdLease>();
  private readonly openWatches = new Set<EtcdPrefixWatch>();
  private closed = false;

  private constructor(client: Etcd3, options: ResolvedEtcdDiscoveryOptions) {
    this.client = client;
    this.endpoints = options.endpoints;
    this.logger = options.logger;
    this.requestTimeoutMs = options.requestTimeoutMs;
    this.leaseContext = {
      client,
      logger: options.logger,
      requestTimeoutMs: options.requestTimeoutMs,
      onEnded: (lease) => this.forgetLease(lease),
    };
  }

  /**
   * Validates the options, connects, and waits until etcd answers, for up to
   * `dialTimeoutMs` (logging at warn while it waits); fails with
   * `dependency_unavailable` naming the endpoints and the time waited if it
   * does not, or `cancelled` when `signal` aborts first.
   */
  static async connect(options: EtcdDiscoveryOptions): Promise<EtcdDiscovery> {
    const resolved = resolveEtcdDiscoveryOptions(options);
    const { requestTimeoutMs } = resolved;
    const security = await etcdClientSecurity(resolved.auth, resolved.tls);
    const clientOptions: IOptions = {
      hosts: resolved.endpoints,
      ...(security.credentials ? { credentials: security.credentials } : {}),
      dialTimeout: resolved.dialTimeoutMs,
      // Streams (watch, keep-alive) live long; every other call gets a deadline.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
      grpcOptions: {
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 1_000,
        // Notices a silently dead connection (partition) under a long-lived watch.
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 5_000,
      },
      faultHandling: { host: () => passThroughPolicy, watchBackoff: watchBackoff(100) },
    };
    const client = new Etcd3({ ...clientOptions, ...(security.auth ? { auth: security.auth } : {}) });
    /*
     * etcd3 authenticates on a channel of its own made for that one call, which
     * fails before its first connection attempt ends ("Last error: null"): a
     * refused certificate would read as etcd being down. Without auth a call
     * reaches the channel's real error, so reachability and TLS are probed on
     * a client without the user first.
     */
    const transportProbe = security.auth ? new Etcd3(clientOptions) : client;
    try {
      await waitForServer({
        server: "etcd",
        endpoints: resolved.endpoints,
        timeoutMs: resolved.dialTimeoutMs,
        signal: options.signal,
        logger: resolved.logger,
        // The wait's own bound (remainingMs) goes first, so a late attempt reads as cut short, not as etcd's error.
        attempt: async (remainingMs) => {
          const deadline = () => Date.now() + Math.min(remainingMs + 250, requestTimeoutMs);
          await transportProbe.maintenance.status({ deadline: deadline() });
          await probeAuth(client, resolved.auth !== undefined, deadline());
        },
        isPermanent: (err) => isAuthFailure(err) || isTlsFailure(err),
      });
    } catch (err) {
      client.close();
      throw toConnectError(resolved, err);
    } finally {
      if (transportProbe !== client) transportProbe.close();
    }
    return new EtcdDiscovery(client, resolved);
  }

  async grantLease(ttlMs: number): Promise<Lease> {
    this.assertOpen();
    if (typeof ttlMs !== "number" || !Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new TdistError("invalid_option", `ttlMs: expected a positive number of milliseconds, got ${String(ttlMs)}`);
    }
    const lease = await this.call(`granting a lease of ${ttlMs} ms`, () => EtcdLease.grant(this.leaseContext, ttlMs));
    if (this.closed) {
      await lease.revoke().catch(() => {});
      this.assertOpen();
    }
    this.ownedLeases.add(lease);
    return lease;
  }

  async put(key: string, value: string, options?: PutOptions): Promise<void> {
    this.assertOpen();
    const lease = this.etcdLease(options?.lease);
    this.attachKey(key, lease, value, "put");
    try {
      await this.call(`putting ${key}`, () =>
        this.withLeaseRecovery(lease, () =>
          this.client.kv.put({ key: Buffer.from(key), value: Buffer.from(value), lease: lease?.etcdId ?? "0" }),
        ),
      );
    } catch (err) {
      lease?.untrackKey(key);
      throw err;
    }
  }

  async create(key: string, value: string, options?: PutOptions): Promise<boolean> {
    this.assertOpen();
    const lease = this.etcdLease(options?.lease);
    const keyBytes = Buffer.from(key);
    const response = await this.call(`creating ${key}`, () =>
      this.withLeaseRecovery(lease, () =>
        this.client.kv.txn({
          compare: [{ key: keyBytes, target: "Version", result: "Equal", version: 0 }],
          success: [{ request_put: { key: keyBytes, value: Buffer.from(value), lease: lease?.etcdId ?? "0" } }],
        }),
      ),
    );
    if (response.succeeded) this.attachKey(key, lease, value, "create");
    return response.succeeded;
  }

  async get(key: string): Promise<string | undefined> {
    this.assertOpen();
    const response = await this.call(`getting ${key}`, () => this.client.kv.range({ key: Buffer.from(key) }));
    return response.kvs[0]?.value.toString();
  }

  async delete(key: string): Promise<void> {
    this.assertOpen();
    this.attachKey(key, undefined, "", "put");
    await this.call(`deleting ${key}`, () => this.client.kv.deleteRange({ key: Buffer.from(key) }));
  }

  async list(prefix: string): Promise<KeyValue[]> {
    this.assertOpen();
    const snapshot = await this.call(`listing ${prefix}`, () => listPrefix(this.client, prefix));
    return snapshot.kvs;
  }

  async watchPrefix(prefix: string, options?: WatchOptions): Promise<PrefixWatch> {
    this.assertOpen();
    const signal = options?.signal;
    const snapshot = await this.call(`listing ${prefix}`, () => listPrefix(this.client, prefix));
    this.assertOpen();
    const onAbort = (): void => watch.close();
    const watch = new EtcdPrefixWatch(this.client, prefix, snapshot, this.logger, (closed) => {
      signal?.removeEventListener("abort", onAbort);
      this.openWatches.delete(closed);
    });
    this.openWatches.add(watch);
    if (signal?.aborted) watch.close();
    else signal?.addEventListener("abort", onAbort, { once: true });
    return watch;
  }

  /**
   * Closes watches, revokes the leases this handle granted (their keys are
   * deleted at once: graceful shutdown) and closes the connection. When etcd
   * cannot be reached the revoke is given up after `requestTimeoutMs` (logged)
   * and the keys expire after their TTL.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.openWatches].map((watch) => watch.closeAndWait()));
    await Promise.all(
      [...this.ownedLeases].map((lease) =>
        withDeadline(lease.revoke(), this.requestTimeoutMs).catch((err: unknown) => {
          this.logger.warn({ leaseId: lease.id, error: messageOf(err) }, "revoking an etcd lease on close failed");
        }),
      ),
    );
    this.client.close();
  }

  /**
   * Stops every keep-alive without revoking and closes the connection, as if
   * this process had crashed: etcd deletes the leased keys once their TTL
   * runs out. For tests that need a dead instance.
   */
  async simulateCrash(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const lease of [...this.ownedLeases]) lease.abandon();
    await Promise.all([...this.openWatches].map((watch) => watch.closeAndWait()));
    this.client.close();
  }

  private etcdLease(lease: Lease | undefined): EtcdLease | undefined {
    if (lease === undefined) return undefined;
    if (!(lease instanceof EtcdLease)) {
      throw new TdistError("bad_request", "the lease was not granted by an etcd discovery");
    }
    lease.assertUsable();
    return lease;
  }

  /** Records which lease (if any) now holds `key`, so a recovered lease puts back only its own keys. */
  private attachKey(key: string, lease: EtcdLease | undefined, value: string, mode: "put" | "create"): void {
    const previous = this.keyLeases.get(key);
    if (previous && previous !== lease) previous.untrackKey(key);
    if (lease) {
      lease.trackKey(key, value, mode);
      this.keyLeases.set(key, lease);
    } else {
      this.keyLeases.delete(key);
    }
  }

  /** A write that finds its lease gone recovers the lease (same id) and tries once more. */
  private async withLeaseRecovery<T>(lease: EtcdLease | undefined, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      if (!lease || !(err instanceof EtcdLeaseInvalidError)) throw err;
      await lease.recover("a write found the lease gone");
      return write();
    }
  }

  private forgetLease(lease: EtcdLease): void {
    this.ownedLeases.delete(lease);
    for (const [key, holder] of this.keyLeases) {
      if (holder === lease) this.keyLeases.delete(key);
    }
  }

  private async call<T>(what: string, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (err) {
      throw toDiscoveryError(what, err);
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new TdistError("shutting_down", "discovery handle is closed");
  }
}

/**
 * One read that needs a user when etcd has auth enabled (a status call does
 * not), so missing credentials fail here rather than at the first put. etcd
 * answers it with "permission denied" both to a call without a user and to a
 * user without read access to the key: only the first is a failure.
 */
async function probeAuth(client: Etcd3, withUser: boolean, deadline: number): Promise<void> {
  try {
    await client.kv.range({ key: Buffer.from("v1/"), limit: 1, keys_only: true, serializable: true }, { deadline });
  } catch (err) {
    if (withUser && err instanceof EtcdPermissionDeniedError) return;
    throw err;
  }
}

/** etcd 3.4 answers a call without a user, when auth is on, with "user name is empty" (INVALID_ARGUMENT). */
function isMissingUser(err: unknown): boolean {
  return err instanceof Error && /etcdserver: user name is empty/.test(err.message);
}

function isAuthFailure(err: unknown): boolean {
  return (
    err instanceof EtcdAuthenticationFailedError ||
    err instanceof EtcdPermissionDeniedError ||
    err instanceof GRPCUnauthenticatedError ||
    isMissingUser(err)
  );
}

/** grpc-js reports a refused certificate only in the text of the subchannel's last error. */
function isTlsFailure(err: unknown): boolean {
  return (
    err instanceof Error &&
    /certificate|self[- ]signed|SSL routines|wrong version number|handshake|alert/i.test(err.message)
  );
}

function toConnectError(options: ResolvedEtcdDiscoveryOptions, err: unknown): TdistError {
  const where = `etcd at ${options.endpoints.join(", ")}`;
  if (isAuthFailure(err)) {
    const detail =
      options.auth === undefined
        ? "etcd has auth enabled and no user was given (TDIST_ETCD_USERNAME, TDIST_ETCD_PASSWORD)"
        : `user ${JSON.stringify(options.auth.username)} refused`;
    return new TdistError("unauthorized", `${where}: authentication failed (${detail}): ${causeText(err)}`, {
      cause: err,
    });
  }
  if (isTlsFailure(err)) {
    return new TdistError("tls_failed", `${where}: TLS failed: ${causeText(err)}`, { cause: err });
  }
  return TdistError.wrap(err, "dependency_unavailable", `cannot connect to ${where}`);
}

function toDiscoveryError(what: string, err: unknown): TdistError {
  if (err instanceof TdistError) return err;
  if (err instanceof EtcdLeaseInvalidError) {
    return new TdistError("lease_lost", `${what}: ${messageOf(err)}`, { cause: err });
  }
  return new TdistError("discovery_error", `${what}: ${messageOf(err)}`, { cause: err });
}

/** Rejects with a `timeout` error when `promise` takes longer than `timeoutMs`. */
async function withDeadline<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TdistError("timeout", `no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
