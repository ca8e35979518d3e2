import { type EventPlane, type Logger, namespaceEventSubject, silentLogger } from "@tdist/runtime";
import type { KvCacheEventData, KvStoredBlock } from "./kv-events.js";

/**
 * A router that saw a gap in a worker's KV event ids asks the worker to
 * re-send its state: it publishes a {@link KvResyncRequest} on
 * `tdist.ns.{namespace}.kv-resync`; the worker answers on its normal event
 * stream with `cleared` followed by `stored` events for every block it
 * holds ({@link resyncEvents}), numbered after its previous events.
 */
export const KV_RESYNC_TOPIC = "kv-resync";

export interface KvResyncRequest {
  /** The worker whose events had a gap. */
  workerId: string;
  expectedEventId?: number;
  receivedEventId?: number;
}

/** The namespace-wide subject of resync requests. */
export function kvResyncSubject(namespace: string): string {
  return namespaceEventSubject(namespace, KV_RESYNC_TOPIC);
}

/** One cached block and the block before it (null: the first block of a sequence). */
export interface HeldBlock {
  parentHash: string | null;
  block: KvStoredBlock;
}

/**
 * The events that rebuild a router's view of a worker from nothing:
 * `cleared`, then `stored` runs for `blocks`, parents before children (a run
 * follows one chain; each branch starts a new run). Blocks whose parent is
 * not among `blocks` are unreachable by prefix matching and left out.
 */
export function resyncEvents(blocks: Iterable<HeldBlock>): KvCacheEventData[] {
  const children = new Map<string | null, KvStoredBlock[]>();
  for (const { parentHash, block } of blocks) {
    let list = children.get(parentHash);
    if (list === undefined) {
      list = [];
      children.set(parentHash, list);
    }
    list.push(block);
  }
  const events: KvCacheEventData[] = [{ type: "cleared" }];
  const pending: { parentHash: string | null; block: KvStoredBlock }[] = (children.get(null) ?? []).map((block) => ({
    parentHash: null,
    block,
  }));
  const emitted = new Set<string>();
  while (pending.length > 0) {
    const start = pending.pop() as HeldBlock;
    if (emitted.has(start.block.blockHash)) continue;
    const run: KvStoredBlock[] = [];
    let current: KvStoredBlock | undefined = start.block;
    while (current !== undefined && !emitted.has(current.blockHash)) {
      emitted.add(current.blockHash);
      run.push(current);
      const [next, ...branches]: KvStoredBlock[] = children.get(current.blockHash) ?? [];
      for (const branch of branches) pending.push({ parentHash: current.blockHash, block: branch });
      current = next;
    }
    events.push({ type: "stored", parentHash: start.parentHash, blocks: run });
  }
  return events;
}

/**
 * Answers resync requests for one worker: subscribes to the namespace's
 * requests and calls `resync` for those naming `workerId` (at most one at a
 * time; requests arriving meanwhile are answered by the one running). Ends
 * when `signal` aborts.
 */
export async function answerKvResyncRequests(options: {
  plane: EventPlane;
  namespace: string;
  workerId: string;
  resync: () => Promise<void>;
  signal: AbortSignal;
  logger?: Logger;
}): Promise<{ done: Promise<void> }> {
  const logger = options.logger ?? silentLogger;
  const subscription = options.plane.subscribe<KvResyncRequest>(kvResyncSubject(options.namespace), {
    signal: options.signal,
    maxBuffered: 1_000,
  });
  await subscription.ready;
  let running: Promise<void> | undefined;
  const done = (async () => {
    for await (const { payload } of subscription) {
      if (payload?.workerId !== options.workerId || running !== undefined) continue;
      logger.info({ ...payload }, "re-sending KV state on a router's request");
      running = options
        .resync()
        .catch((err: unknown) => logger.warn({ err, workerId: options.workerId }, "re-sending KV state failed"))
        .finally(() => {
          running = undefined;
        });
    }
    await running;
  })().catch((err: unknown) => {
    if (!options.signal.aborted) logger.warn({ err }, "KV resync subscription failed");
  });
  return { done };
}
