/**
 * KV cache events that engines publish on the event plane (docs/architecture.md,
 * "KV-aware routing"). Block hashes are chained: `seq[i] = hash(seq[i-1], local[i])`
 * over fixed-size token blocks (xxh3-64 over little-endian u32 token ids,
 * seed 1337), written as lower-case hex strings of the 64-bit value.
 */
export interface KvStoredBlock {
  /** Chained (sequence) hash of the block: identifies the whole prefix up to it. */
  blockHash: string;
  /** Hash of this block's tokens alone. */
  tokensHash: string;
}

export type KvCacheEventData =
  | { type: "stored"; parentHash: string | null; blocks: KvStoredBlock[] }
  | { type: "removed"; blockHashes: string[] }
  | { type: "cleared" };

/** One event from one worker; `eventId` increases by one per event so gaps are detected. */
export interface KvCacheEvent {
  workerId: string;
  eventId: number;
  data: KvCacheEventData;
}

/** Load a worker reports (for the scheduler and metrics). */
export interface WorkerLoadMetrics {
  workerId: string;
  activeSequences: number;
  waitingSequences: number;
  activeKvBlocks: number;
  totalKvBlocks: number;
  /** activeKvBlocks / totalKvBlocks. */
  kvUsage: number;
  prefillTokensQueued: number;
}

/** Event plane topics under the worker's component. */
export const KV_EVENTS_TOPIC = "kv-events";
export const LOAD_METRICS_TOPIC = "load-metrics";
