import { TdistError } from "../errors/tdist-error.js";
import { AsyncQueue } from "../util/async-queue.js";
import { randomId64 } from "../util/ids.js";
import type { Discovery, KeyValue, Lease, PrefixWatch, PutOptions, WatchEvent, WatchOptions } from "./discovery.js";

interface StoredLease {
  id: string;
  ttlMs: number;
  expiresAt: number;
  keys: Set<string>;
  controller: AbortController;
  keepAliveTimer: NodeJS.Timeout;
}

interface Watcher {
  prefix: string;
  queue: AsyncQueue<WatchEvent>;
}

/**
 * The shared state behind memory discovery. Runtimes in one process that are
 * given the same store see each other, as processes sharing etcd would.
 */
export class MemoryDiscoveryStore {
  private static sharedStore: MemoryDiscoveryStore | undefined;
  private readonly entries = new Map<string, KeyValue>();
  private readonly leases = new Map<string, StoredLease>();
  private readonly watchers = new Set<Watcher>();
  private readonly expiryTimer: NodeJS.Timeout;

  constructor() {
    this.expiryTimer = setInterval(() => this.expireLeases(), 250);
    this.expiryTimer.unref();
  }

  /** The process-wide store that runtimes use when given no other. */
  static shared(): MemoryDiscoveryStore {
    MemoryDiscoveryStore.sharedStore ??= new MemoryDiscoveryStore();
    return MemoryDiscoveryStore.sharedStore;
  }

  grant(ttlMs: number): StoredLease {
    let id = randomId64();
    while (this.leases.has(id)) id = randomId64();
    const lease: StoredLease = {
      id,
      ttlMs,
      expiresAt: Date.now() + ttlMs,
      keys: new Set(),
      controller: new AbortController(),
      keepAliveTimer: setInterval(() => this.keepAlive(id), Math.max(1, Math.floor(ttlMs / 3))),
    };
    lease.keepAliveTimer.unref();
    this.leases.set(id, lease);
    return lease;
  }

  keepAlive(id: string): void {
    const lease = this.leases.get(id);
    if (lease) lease.expiresAt = Date.now() + lease.ttlMs;
  }

  /**
   * Ends a lease as if its holder died: keep-alives stop and its keys vanish.
   * Tests use this to simulate a crashed process in embedded mode.
   */
  expire(id: string): void {
    this.endLease(id, new TdistError("lease_lost", `lease ${id} expired`));
  }

  revoke(id: string): void {
    this.endLease(id, new TdistError("lease_lost", `lease ${id} revoked`));
  }

  put(key: string, value: string, leaseId?: string): void {
    if (leaseId !== undefined) {
      const lease = this.leases.get(leaseId);
      if (!lease) throw new TdistError("lease_lost", `lease ${leaseId} does not exist`);
      lease.keys.add(key);
    }
    const previous = this.entries.get(key);
    if (previous?.leaseId !== undefined && previous.leaseId !== leaseId) {
      this.leases.get(previous.leaseId)?.keys.delete(key);
    }
    this.entries.set(key, leaseId === undefined ? { key, value } : { key, value, leaseId });
    this.emit({ type: "put", key, value });
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  get(key: string): string | undefined {
    return this.entries.get(key)?.value;
  }

  delete(key: string): void {
    const previous = this.entries.get(key);
    if (!previous) return;
    if (previous.leaseId !== undefined) this.leases.get(previous.leaseId)?.keys.delete(key);
    this.entries.delete(key);
    this.emit({ type: "delete", key });
  }

  list(prefix: string): KeyValue[] {
    const out: KeyValue[] = [];
    for (const entry of this.entries.values()) {
      if (entry.key.startsWith(prefix)) out.push({ ...entry });
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Snapshot and subscription happen in one synchronous step, so no event falls between them. */
  watch(prefix: string): { initial: KeyValue[]; watcher: Watcher } {
    const watcher: Watcher = { prefix, queue: new AsyncQueue<WatchEvent>(() => this.watchers.delete(watcher)) };
    this.watchers.add(watcher);
    return { initial: this.list(prefix), watcher };
  }

  unwatch(watcher: Watcher): void {
    this.watchers.delete(watcher);
    watcher.queue.end();
  }

  leaseSignal(id: string): AbortSignal | undefined {
    return this.leases.get(id)?.controller.signal;
  }

  private emit(event: WatchEvent): void {
    for (const watcher of this.watchers) {
      if (event.key.startsWith(watcher.prefix)) watcher.queue.push(event);
    }
  }

  private endLease(id: string, reason: TdistError): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    this.leases.delete(id);
    clearInterval(lease.keepAliveTimer);
    for (const key of [...lease.keys]) this.delete(key);
    lease.controller.abort(reason);
  }

  private expireLeases(): void {
    const now = Date.now();
    for (const lease of [...this.leases.values()]) {
      if (lease.expiresAt < now) this.expire(lease.id);
    }
  }
}

/** Memory discovery over a (possibly shared) store: embedded mode's backend. */
export class MemoryDiscovery implements Discovery {
  readonly kind = "memory" as const;
  private readonly ownedLeases = new Set<string>();
  private readonly openWatches = new Set<PrefixWatch>();
  private closed = false;

  constructor(readonly store: MemoryDiscoveryStore = MemoryDiscoveryStore.shared()) {}

  async grantLease(ttlMs: number): Promise<Lease> {
    this.assertOpen();
    const stored = this.store.grant(ttlMs);
    this.ownedLeases.add(stored.id);
    const store = this.store;
    const owned = this.ownedLeases;
    return {
      id: stored.id,
      ttlMs,
      lost: stored.controller.signal,
      async revoke() {
        owned.delete(stored.id);
        store.revoke(stored.id);
      },
    };
  }

  async put(key: string, value: string, options?: PutOptions): Promise<void> {
    this.assertOpen();
    this.store.put(key, value, options?.lease?.id);
  }

  async create(key: string, value: string, options?: PutOptions): Promise<boolean> {
    this.assertOpen();
    if (this.store.has(key)) return false;
    this.store.put(key, value, options?.lease?.id);
    return true;
  }

  async get(key: string): Promise<string | undefined> {
    this.assertOpen();
    return this.store.get(key);
  }

  async delete(key: string): Promise<void> {
    this.assertOpen();
    this.store.delete(key);
  }

  async list(prefix: string): Promise<KeyValue[]> {
    this.assertOpen();
    return this.store.list(prefix);
  }

  async watchPrefix(prefix: string, options?: WatchOptions): Promise<PrefixWatch> {
    this.assertOpen();
    const { initial, watcher } = this.store.watch(prefix);
    const store = this.store;
    const openWatches = this.openWatches;
    const signal = options?.signal;
    const onAbort = (): void => watch.close();
    const watch: PrefixWatch = {
      initial,
      close() {
        signal?.removeEventListener("abort", onAbort);
        openWatches.delete(watch);
        store.unwatch(watcher);
      },
      [Symbol.asyncIterator]: () => watcher.queue,
    };
    openWatches.add(watch);
    if (signal?.aborted) watch.close();
    else signal?.addEventListener("abort", onAbort, { once: true });
    return watch;
  }

  /** Closes watches and revokes the leases this handle granted. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const watch of [...this.openWatches]) watch.close();
    for (const id of [...this.ownedLeases]) this.store.revoke(id);
    this.ownedLeases.clear();
  }

  private assertOpen(): void {
    if (this.closed) throw new TdistError("shutting_down", "discovery handle is closed");
  }
}
