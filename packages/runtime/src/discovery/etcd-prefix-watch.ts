import type { Etcd3, IKeyValue, IWatchResponse, Watcher } from "etcd3";
import type { Logger } from "../logger.js";
import { delay } from "../util/abort.js";
import { AsyncQueue } from "../util/async-queue.js";
import type { KeyValue, PrefixWatch, WatchEvent } from "./discovery.js";
import { leaseIdToHex } from "./etcd-lease.js";

/** The keys under a prefix at one store revision. */
export interface PrefixSnapshot {
  kvs: KeyValue[];
  revision: bigint;
}

/** The end of the key range holding every key that starts with `prefix` (etcd's convention). */
export function prefixRangeEnd(prefix: string): Buffer {
  const bytes = Buffer.from(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    const byte = bytes[i] as number;
    if (byte < 0xff) {
      const end = bytes.subarray(0, i + 1);
      end[i] = byte + 1;
      return end;
    }
  }
  // Empty prefix, or only 0xff bytes: every key from `prefix` on.
  return Buffer.from([0]);
}

export function toKeyValue(kv: IKeyValue): KeyValue {
  const entry: KeyValue = { key: kv.key.toString(), value: kv.value.toString() };
  if (kv.lease && kv.lease !== "0") entry.leaseId = leaseIdToHex(kv.lease);
  return entry;
}

export async function listPrefix(client: Etcd3, prefix: string): Promise<PrefixSnapshot> {
  const response = await client.kv.range({ key: Buffer.from(prefix), range_end: prefixRangeEnd(prefix) });
  return { kvs: response.kvs.map(toKeyValue), revision: BigInt(response.header.revision) };
}

const resyncInitialDelayMs = 100;
const resyncMaxDelayMs = 2_000;
const cancelTimeoutMs = 2_000;

/**
 * A gap-free prefix watch over etcd: the snapshot is listed at revision R and
 * the watch starts at R + 1, so nothing falls between them.
 *
 * etcd3's watcher reconnects by itself after etcd restarts; this class makes
 * it resume after the last revision it actually delivered (etcd3 alone resumes
 * after the last revision etcd *reported*, which can skip events that were
 * still in flight) and drops replayed events. When etcd can no longer replay
 * the history (compacted, or its data was lost and revisions went backwards),
 * the watch lists the prefix again and emits the difference to what it had
 * delivered as synthetic put/delete events, then watches on from there.
 */
export class EtcdPrefixWatch implements PrefixWatch {
  readonly initial: readonly KeyValue[];
  private readonly queue: AsyncQueue<WatchEvent>;
  /** The values the consumer has been told about, to compute a resync's difference. */
  private readonly known = new Map<string, string>();
  /** Every event up to this revision has been delivered. */
  private revision: bigint;
  private watcher: Watcher | undefined;
  private resyncing = false;
  private closed = false;
  private readonly stop = new AbortController();

  constructor(
    private readonly client: Etcd3,
    readonly prefix: string,
    snapshot: PrefixSnapshot,
    private readonly logger: Logger,
    private readonly onClosed: (watch: EtcdPrefixWatch) => void,
  ) {
    this.initial = snapshot.kvs;
    for (const kv of snapshot.kvs) this.known.set(kv.key, kv.value);
    this.revision = snapshot.revision;
    this.queue = new AsyncQueue<WatchEvent>(() => this.close());
    this.attach();
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return this.queue;
  }

  close(): void {
    this.closeAndWait().catch(() => {});
  }

  /** Closes, resolving once the etcd watcher is cancelled (bounded), for an orderly client shutdown. */
  async closeAndWait(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop.abort();
    this.queue.end();
    this.onClosed(this);
    await this.detach();
  }

  private attach(): void {
    const watcher = this.client
      .watch()
      .inRange({ start: Buffer.from(this.prefix), end: prefixRangeEnd(this.prefix) })
      .startRevision((this.revision + 1n).toString())
      .watcher();
    this.watcher = watcher;
    watcher.on("data", (response) => this.onData(watcher, response));
    watcher.on("connected", (response) => this.onConnected(watcher, response));
    watcher.on("disconnected", (err) => {
      if (watcher !== this.watcher) return;
      // etcd3 would resume after the last revision etcd reported; resume after the last one delivered.
      watcher.request.start_revision = (this.revision + 1n).toString();
      this.logger.debug({ prefix: this.prefix, error: err.message }, "etcd watch disconnected; reconnecting");
    });
    watcher.on("error", (err) => {
      if (watcher !== this.watcher) return;
      // etcd already cancelled this watcher (and etcd3 dropped it): nothing to cancel.
      this.watcher = undefined;
      this.resync(`the watch was cancelled by etcd (${err.message})`);
    });
  }

  private detach(): Promise<void> {
    const watcher = this.watcher;
    this.watcher = undefined;
    return watcher ? cancelWatcher(watcher) : Promise.resolve();
  }

  private onConnected(watcher: Watcher, response: IWatchResponse): void {
    if (watcher !== this.watcher) return;
    const current = BigInt(response.header.revision);
    if (current < this.revision) {
      this.resync(`etcd's revision went back from ${this.revision} to ${current} (data lost or restored)`);
    }
  }

  private onData(watcher: Watcher, response: IWatchResponse): void {
    if (watcher !== this.watcher || this.closed) return;
    // etcd never splits one revision across responses, so anything at or
    // below the delivered revision is a replay after a reconnect.
    const floor = this.revision;
    for (const event of response.events) {
      const revision = BigInt(event.kv.mod_revision);
      if (revision <= floor) continue;
      const key = event.kv.key.toString();
      if (event.type === "Put") {
        const value = event.kv.value.toString();
        this.known.set(key, value);
        this.queue.push({ type: "put", key, value });
      } else {
        this.known.delete(key);
        this.queue.push({ type: "delete", key });
      }
      if (revision > this.revision) this.revision = revision;
    }
  }

  /** Lists again and emits the difference; retries until it succeeds or the watch closes. */
  private resync(reason: string): void {
    if (this.resyncing || this.closed) return;
    this.resyncing = true;
    this.detach().catch(() => {});
    this.logger.warn({ prefix: this.prefix, reason }, "etcd watch cannot replay its history; listing the prefix again");
    this.runResync()
      .catch(() => {})
      .finally(() => {
        this.resyncing = false;
      });
  }

  private async runResync(): Promise<void> {
    let wait = resyncInitialDelayMs;
    while (!this.closed) {
      try {
        const snapshot = await listPrefix(this.client, this.prefix);
        if (this.closed) return;
        this.applySnapshot(snapshot);
        this.attach();
        return;
      } catch (err) {
        this.logger.debug(
          { prefix: this.prefix, error: err instanceof Error ? err.message : String(err) },
          "listing for an etcd watch resync failed; retrying",
        );
        await delay(wait, this.stop.signal);
        wait = Math.min(resyncMaxDelayMs, wait * 2);
      }
    }
  }

  private applySnapshot(snapshot: PrefixSnapshot): void {
    const current = new Map(snapshot.kvs.map((kv) => [kv.key, kv.value]));
    for (const key of [...this.known.keys()].sort()) {
      if (current.has(key)) continue;
      this.known.delete(key);
      this.queue.push({ type: "delete", key });
    }
    for (const kv of snapshot.kvs) {
      if (this.known.get(kv.key) === kv.value) continue;
      this.known.set(kv.key, kv.value);
      this.queue.push({ type: "put", key: kv.key, value: kv.value });
    }
    this.revision = snapshot.revision;
  }
}

/** Cancels an etcd3 watcher, waiting at most a bounded time (its cancel can wait on a dead stream). */
async function cancelWatcher(watcher: Watcher): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, cancelTimeoutMs);
    timer.unref();
  });
  try {
    await Promise.race([watcher.cancel().catch(() => {}), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
