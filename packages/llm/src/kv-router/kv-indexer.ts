import { type Logger, silentLogger, TdistError } from "@tdist/runtime";
import { computeBlockHashes } from "../kv/block-hash.js";
import { kvEventProblem } from "../kv/kv-event-validation.js";
import type { KvCacheEvent, KvCacheEventData } from "../kv/kv-events.js";
import { checkBlockSize } from "./llm-router.js";
import { MalformedEventWarnings } from "./malformed-event-warnings.js";
import { RadixTree, type RadixTreeOptions, type RadixTreeSnapshot, type RadixTreeStats } from "./radix-tree.js";
import { type RouterClock, systemRouterClock } from "./router-clock.js";

export interface KvIndexerOptions extends RadixTreeOptions {
  /** Tokens per KV block; every worker's card must say the same. */
  blockSize: number;
  clock?: RouterClock;
  /**
   * Called when a gap in a worker's event ids made the indexer drop that
   * worker's blocks. A worker able to re-send its state (a `cleared` event
   * followed by `stored` events for what it holds) can be asked to here.
   */
  onResync?: (workerId: string, gap: { expectedEventId: number; receivedEventId: number }) => void;
  /** Called for each event that is not a KV event (it is skipped), e.g. to count it in the router metrics. */
  onMalformedEvent?: (problem: string) => void;
  /** Malformed events are logged at most once per worker per this interval, with the count. Default 1 000 ms. */
  malformedWarningIntervalMs?: number;
  logger?: Logger;
}

/** What applying one event did. */
export type KvEventOutcome =
  /** In order: applied. */
  | "applied"
  /** An id at or below the last applied one (a replay overlap): ignored. */
  | "duplicate"
  /** Ids were skipped: the worker's blocks were dropped, then this event applied. */
  | "gap"
  /** Id 0 after later ids: the worker restarted; its blocks were dropped, then this event applied. */
  | "restart"
  /** Not a KV event: ignored. */
  | "invalid";

export interface KvWorkerSyncState {
  /** Last applied event id (undefined before the first event). */
  lastEventId: number | undefined;
  /** Gaps seen so far. */
  gaps: number;
  /** True from a gap until the worker sends `cleared`: its index is a partial view (it can only under-count). */
  resyncing: boolean;
  /** Block size from the worker's card, once registered. */
  kvBlockSize: number | undefined;
}

export interface KvIndexerStats extends RadixTreeStats {
  eventsApplied: number;
  duplicates: number;
  gaps: number;
  invalidEvents: number;
}

/** Matched leading blocks per worker for one prompt, with the prompt's block hashes (to reuse). */
export interface OverlapScores {
  blockHashes: string[];
  /** workerId -> leading blocks held; workers holding none are absent. */
  scores: ReadonlyMap<string, number>;
}

export interface KvIndexerSnapshot {
  version: 1;
  blockSize: number;
  tree: RadixTreeSnapshot;
  workers: { workerId: string; lastEventId: number | undefined }[];
  /** Position in a replayable event stream (JetStream sequence) this state reflects, when known. */
  streamSequence?: number;
}

/**
 * The KV indexer: applies workers' KV events to a {@link RadixTree} and
 * answers "how many leading blocks of this prompt does each worker hold".
 *
 * Event ids are checked per worker (docs/architecture.md: ids increase by one):
 *
 * - the first event seen from a worker sets its base, whatever its id;
 * - id = last + 1: applied;
 * - id <= last: a duplicate (replay overlap), ignored, except id 0, which
 *   means the worker restarted: its blocks are dropped and the event applied;
 * - id > last + 1: a **gap** (events were lost). Every block of that worker
 *   is dropped (so no stale block is ever scored), the worker is marked
 *   `resyncing`, `onResync` is called, and the event is applied. Its score
 *   then restarts from zero and grows with the blocks it stores after the
 *   gap: a partial view that can only under-count. `resyncing` clears when
 *   the worker sends `cleared` (a worker that can re-send its state does so
 *   as `cleared` followed by `stored` events).
 *
 * ```ts
 * const indexer = new KvIndexer({ blockSize: card.kvBlockSize });
 * indexer.applyEvent(event);
 * indexer.findMatches(request.tokenIds).scores; // Map { workerId => leading blocks }
 * ```
 */
export class KvIndexer {
  readonly blockSize: number;
  readonly tree: RadixTree;
  /** Sequence of the last event applied from a replayable stream (JetStream), for snapshots. */
  streamSequence: number | undefined;
  private readonly clock: RouterClock;
  private readonly sync = new Map<string, KvWorkerSyncState>();
  private readonly onResync: KvIndexerOptions["onResync"];
  private readonly onMalformedEvent: KvIndexerOptions["onMalformedEvent"];
  private readonly malformedWarnings: MalformedEventWarnings;
  private readonly logger: Logger;
  private applied = 0;
  private duplicates = 0;
  private gaps = 0;
  private invalid = 0;

  constructor(options: KvIndexerOptions) {
    if (!Number.isInteger(options?.blockSize) || options.blockSize < 1) {
      throw new TdistError("invalid_option", `blockSize must be a positive integer, got ${String(options?.blockSize)}`);
    }
    this.blockSize = options.blockSize;
    this.tree = new RadixTree(options);
    this.clock = options.clock ?? systemRouterClock;
    this.onResync = options.onResync;
    this.onMalformedEvent = options.onMalformedEvent;
    this.logger = options.logger ?? silentLogger;
    const clock = this.clock;
    this.malformedWarnings = new MalformedEventWarnings(this.logger, options.malformedWarningIntervalMs ?? 1_000, () =>
      clock.now(),
    );
  }

  /**
   * A worker's card appeared (its `kvBlockSize`). A block size other than
   * the indexer's is a configuration error: throws `invalid_option`.
   */
  registerWorker(workerId: string, card: { kvBlockSize: number }): void {
    checkBlockSize(workerId, this.blockSize, card);
    this.state(workerId).kvBlockSize = card.kvBlockSize;
  }

  /** A worker left: its blocks and event-id state go. */
  removeWorker(workerId: string): void {
    this.tree.removeWorker(workerId);
    this.sync.delete(workerId);
  }

  workerState(workerId: string): KvWorkerSyncState | undefined {
    const state = this.sync.get(workerId);
    return state === undefined ? undefined : { ...state };
  }

  stats(): KvIndexerStats {
    return {
      ...this.tree.stats(),
      eventsApplied: this.applied,
      duplicates: this.duplicates,
      gaps: this.gaps,
      invalidEvents: this.invalid,
    };
  }

  /**
   * Applies one event as it came off the event plane. Anything that is not
   * a KV event is skipped ("invalid"): counted, passed to
   * `onMalformedEvent`, and logged at most once per worker per interval.
   */
  applyEvent(value: unknown): KvEventOutcome {
    const problem = kvEventProblem(value);
    if (problem !== undefined) {
      this.rejectEvent(value, problem);
      return "invalid";
    }
    const event = value as KvCacheEvent;
    const state = this.state(event.workerId);
    const last = state.lastEventId;
    let outcome: KvEventOutcome = "applied";
    if (last !== undefined) {
      if (event.eventId === 0 && last > 0) {
        outcome = "restart";
        this.tree.clearWorker(event.workerId);
      } else if (event.eventId <= last) {
        this.duplicates++;
        return "duplicate";
      } else if (event.eventId > last + 1) {
        outcome = "gap";
        this.gaps++;
        state.gaps++;
        state.resyncing = true;
        this.tree.clearWorker(event.workerId);
        const gap = { expectedEventId: last + 1, receivedEventId: event.eventId };
        this.logger.warn({ workerId: event.workerId, ...gap }, "KV event gap: dropped the worker's blocks");
        try {
          this.onResync?.(event.workerId, gap);
        } catch (err) {
          this.logger.warn({ err, workerId: event.workerId }, "onResync callback failed");
        }
      }
    }
    state.lastEventId = event.eventId;
    this.applyData(event.workerId, event.data, state);
    this.applied++;
    return outcome;
  }

  /** Leading blocks of `tokens` held per worker (the prompt is hashed with the shared block hash). */
  findMatches(tokens: ArrayLike<number>): OverlapScores {
    const blockHashes = computeBlockHashes(tokens, this.blockSize).map((block) => block.blockHash);
    return { blockHashes, scores: this.findMatchesForHashes(blockHashes) };
  }

  /** Leading blocks of a prompt, given as its chained block hashes, held per worker. */
  findMatchesForHashes(blockHashes: readonly string[]): ReadonlyMap<string, number> {
    if (this.tree.ttlMs !== undefined) this.tree.maybeExpire(this.clock.now());
    return this.tree.findMatches(blockHashes);
  }

  /**
   * Applies events from a source (an event plane subscription, a replayed
   * history, a JetStream consumer) until it ends. Accepts raw events or
   * event plane messages.
   */
  async follow(source: AsyncIterable<KvCacheEvent | { payload: unknown }>): Promise<void> {
    for await (const item of source) {
      const isMessage = typeof item === "object" && item !== null && "payload" in item;
      this.applyEvent(isMessage ? (item as { payload: unknown }).payload : item);
    }
  }

  snapshot(): KvIndexerSnapshot {
    return {
      version: 1,
      blockSize: this.blockSize,
      tree: this.tree.snapshot(this.clock.now()),
      workers: [...this.sync].map(([workerId, state]) => ({ workerId, lastEventId: state.lastEventId })),
      ...(this.streamSequence === undefined ? {} : { streamSequence: this.streamSequence }),
    };
  }

  /**
   * Replaces the state with a snapshot (from this or another router). Event
   * ids carry over, so a gap across the restart is detected like any other.
   */
  restore(snapshot: KvIndexerSnapshot): void {
    if (snapshot?.version !== 1) throw new TdistError("bad_request", "not a KV indexer snapshot (version 1)");
    if (snapshot.blockSize !== this.blockSize) {
      throw new TdistError(
        "invalid_option",
        `snapshot uses KV blocks of ${snapshot.blockSize} tokens, this indexer ${this.blockSize}`,
      );
    }
    this.tree.restore(snapshot.tree, this.clock.now());
    this.sync.clear();
    for (const { workerId, lastEventId } of snapshot.workers) {
      this.sync.set(workerId, { lastEventId, gaps: 0, resyncing: false, kvBlockSize: undefined });
    }
    this.streamSequence = snapshot.streamSequence;
  }

  private rejectEvent(value: unknown, problem: string): void {
    this.invalid++;
    const workerId = (value as { workerId?: unknown } | null)?.workerId;
    // The payload itself is never logged: it may be megabytes, and whoever published it chose its contents.
    this.malformedWarnings.report(
      typeof workerId === "string" && workerId.length > 0 && workerId.length <= 256 ? workerId : undefined,
      problem,
    );
    try {
      this.onMalformedEvent?.(problem);
    } catch (err) {
      this.logger.warn({ err }, "onMalformedEvent callback failed");
    }
  }

  private state(workerId: string): KvWorkerSyncState {
    let state = this.sync.get(workerId);
    if (state === undefined) {
      state = { lastEventId: undefined, gaps: 0, resyncing: false, kvBlockSize: undefined };
      this.sync.set(workerId, state);
    }
    return state;
  }

  private applyData(workerId: string, data: KvCacheEventData, state: KvWorkerSyncState): void {
    // Only a TTL needs the time of each store.
    const now = this.tree.ttlMs === undefined ? 0 : this.clock.now();
    switch (data.type) {
      case "stored":
        this.tree.store(workerId, data.parentHash, data.blocks, now);
        break;
      case "removed":
        this.tree.remove(workerId, data.blockHashes);
        break;
      case "cleared":
        this.tree.clearWorker(workerId);
        state.resyncing = false;
        break;
    }
  }
}
