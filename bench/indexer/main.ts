/**
 * bench/indexer: how fast the KV router's indexer applies KV events and
 * answers `findMatches`, against a naive index measured in the same run.
 *
 *   npm run bench -- indexer [--quick] [--workers 256]
 *
 * For 8, 64 and 256 workers, each ends up holding 10k+ blocks: sequences of
 * a shared system prompt (one of 16, 32 blocks) plus a 96-block
 * conversation drawn from a pool, so conversations live on about two
 * workers each. Events are what an engine emits: the system prompt once per
 * worker, each conversation's prefill as one `stored` event of 64 blocks,
 * then its decode as 32 one-block `stored` events; then a churn phase of
 * tail-first `removed` events and fresh stores. Queries are 10k prompts
 * (a held sequence, a cut-short one or a miss, with new trailing blocks).
 *
 * Baseline ("naive-map"): one Set of block hashes per worker, matching a
 * prompt by walking each worker's set block by block: what an index without
 * a shared tree costs.
 */
import { parseArgs } from "node:util";
import { type KvCacheEvent, KvIndexer } from "@tdist/llm";
import { type BenchResult, result, writeReport } from "../lib/results.js";
import { percentile } from "../lib/stats.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    /** Run only these cluster sizes (comma-separated), e.g. `--workers 256`. */
    workers: { type: "string" },
  },
});
const quick = values.quick === true;
const onlyWorkers = values.workers?.split(",").map(Number);
if (onlyWorkers?.some((n) => !Number.isInteger(n) || n < 1)) {
  throw new Error(`--workers must be positive integers, got ${values.workers}`);
}
const config = {
  workerCounts: onlyWorkers ?? (quick ? [8, 64] : [8, 64, 256]),
  systemPrompts: 16,
  systemPromptBlocks: 32,
  conversationBlocks: 96,
  prefillBlocksPerEvent: 64,
  sequencesPerWorker: quick ? 40 : 110,
  conversationsPerWorker: 50,
  churnFraction: 0.2,
  queries: quick ? 3_000 : 10_000,
  queryExtraBlocks: 16,
  rounds: quick ? 1 : 5,
  blockSize: 16,
};

/** Deterministic 64-bit-looking hex ids, so hashes look like the real thing to V8's string hashing. */
function makeHasher(seed: number): () => string {
  let a = seed >>> 0;
  let b = (seed * 2654435761) >>> 0;
  const next32 = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a ^ b;
    b = (b + 0x9e3779b9) >>> 0;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return () => next32().toString(16).padStart(8, "0") + next32().toString(16).padStart(8, "0");
}

interface Workload {
  events: KvCacheEvent[];
  blocksInEvents: number;
  queries: string[][];
}

function buildWorkload(workers: number): Workload {
  const hash = makeHasher(workers);
  let seed = workers * 7919;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 4294967296;
  };
  const systemPrompts = Array.from({ length: config.systemPrompts }, () =>
    Array.from({ length: config.systemPromptBlocks }, hash),
  );
  // A conversation continues one system prompt; its hashes are chained, hence distinct per prompt.
  // Several times what one worker draws, so small clusters still hold 10k+ distinct blocks per worker.
  const poolSize = Math.max(Math.floor((workers * config.conversationsPerWorker) / 2), 8 * config.sequencesPerWorker);
  const conversations = Array.from({ length: poolSize }, () => ({
    system: Math.floor(rand() * config.systemPrompts),
    blocks: Array.from({ length: config.conversationBlocks }, hash),
  }));
  const events: KvCacheEvent[] = [];
  let blocksInEvents = 0;
  const sequences: string[][] = [];
  const held: { worker: string; blocks: string[] }[] = [];
  for (let w = 0; w < workers; w++) {
    const workerId = `worker-${w.toString(16).padStart(4, "0")}`;
    let eventId = 0;
    const push = (data: KvCacheEvent["data"]): void => {
      events.push({ workerId, eventId: eventId++, data });
      if (data.type === "stored") blocksInEvents += data.blocks.length;
      if (data.type === "removed") blocksInEvents += data.blockHashes.length;
    };
    const stored = new Set<number>();
    const seen = new Set<number>();
    for (let s = 0; s < config.sequencesPerWorker; s++) {
      const c = Math.floor(rand() * poolSize);
      if (seen.has(c)) continue;
      seen.add(c);
      const conversation = conversations[c] as { system: number; blocks: string[] };
      const system = systemPrompts[conversation.system] as string[];
      if (!stored.has(conversation.system)) {
        stored.add(conversation.system);
        push({ type: "stored", parentHash: null, blocks: system.map((h) => ({ blockHash: h, tokensHash: h })) });
      }
      const prefill = conversation.blocks.slice(0, config.prefillBlocksPerEvent);
      push({
        type: "stored",
        parentHash: system.at(-1) as string,
        blocks: prefill.map((h) => ({ blockHash: h, tokensHash: h })),
      });
      for (let b = config.prefillBlocksPerEvent; b < conversation.blocks.length; b++) {
        const h = conversation.blocks[b] as string;
        push({
          type: "stored",
          parentHash: conversation.blocks[b - 1] as string,
          blocks: [{ blockHash: h, tokensHash: h }],
        });
      }
      const full = [...system, ...conversation.blocks];
      sequences.push(full);
      held.push({ worker: workerId, blocks: full });
    }
  }
  // Churn: evict the tail of some conversations (one block per event, as an LRU does) and store fresh ones.
  const churn = Math.floor(events.length * config.churnFraction);
  const eventIds = new Map<string, number>();
  for (const event of events) eventIds.set(event.workerId, event.eventId + 1);
  for (let i = 0; i < churn; i++) {
    const victim = held[Math.floor(rand() * held.length)] as { worker: string; blocks: string[] };
    const eventId = eventIds.get(victim.worker) as number;
    eventIds.set(victim.worker, eventId + 1);
    if (i % 2 === 0 && victim.blocks.length > config.systemPromptBlocks + 1) {
      const tail = victim.blocks.pop() as string;
      events.push({ workerId: victim.worker, eventId, data: { type: "removed", blockHashes: [tail] } });
      blocksInEvents++;
    } else {
      const h = hash();
      events.push({
        workerId: victim.worker,
        eventId,
        data: { type: "stored", parentHash: victim.blocks.at(-1) as string, blocks: [{ blockHash: h, tokensHash: h }] },
      });
      victim.blocks.push(h);
      blocksInEvents++;
    }
  }
  const queries: string[][] = [];
  for (let q = 0; q < config.queries; q++) {
    const base = sequences[Math.floor(rand() * sequences.length)] as string[];
    const kind = rand();
    const cut = kind < 0.6 ? base.length : kind < 0.9 ? Math.floor(rand() * base.length) : 1;
    const prompt = kind < 0.97 ? base.slice(0, cut) : [];
    for (let i = 0; i < config.queryExtraBlocks; i++) prompt.push(hash());
    queries.push(prompt);
  }
  return { events, blocksInEvents, queries };
}

/** The baseline: a Set of held hashes per worker. */
class NaiveIndex {
  private readonly workers = new Map<string, Set<string>>();

  apply(event: KvCacheEvent): void {
    let set = this.workers.get(event.workerId);
    if (set === undefined) {
      set = new Set();
      this.workers.set(event.workerId, set);
    }
    const data = event.data;
    if (data.type === "stored") for (const block of data.blocks) set.add(block.blockHash);
    else if (data.type === "removed") for (const hash of data.blockHashes) set.delete(hash);
    else set.clear();
  }

  findMatches(hashes: readonly string[]): Map<string, number> {
    const scores = new Map<string, number>();
    for (const [worker, set] of this.workers) {
      let n = 0;
      while (n < hashes.length && set.has(hashes[n] as string)) n++;
      if (n > 0) scores.set(worker, n);
    }
    return scores;
  }
}

function timeApply(apply: (event: KvCacheEvent) => void, events: readonly KvCacheEvent[]): number {
  const start = performance.now();
  for (const event of events) apply(event);
  return (performance.now() - start) / 1000;
}

function timeQueries(find: (hashes: readonly string[]) => ReadonlyMap<string, number>, queries: readonly string[][]) {
  // Warm up the JIT on a slice first.
  for (const q of queries.slice(0, 500)) find(q);
  const samples = new Array<number>(queries.length);
  let matched = 0;
  for (let i = 0; i < queries.length; i++) {
    const start = process.hrtime.bigint();
    const scores = find(queries[i] as string[]);
    samples[i] = Number(process.hrtime.bigint() - start) / 1000;
    matched += scores.size;
  }
  return { samples, matched };
}

/** Bytes (heap plus array buffers) that `release` frees, measured around full collections; undefined without `--expose-gc`. */
function retainedBytes(release: () => void): number | undefined {
  const gc = globalThis.gc;
  if (gc === undefined) return undefined;
  const used = (): number => {
    gc();
    const memory = process.memoryUsage();
    return memory.heapUsed + memory.arrayBuffers;
  };
  const before = used();
  release();
  return before - used();
}

const results: BenchResult[] = [];
const details: Record<string, unknown> = {};
for (const workers of config.workerCounts) {
  const { events, blocksInEvents, queries } = buildWorkload(workers);
  const variant = `w${workers}`;
  let bestTreeSeconds = Number.POSITIVE_INFINITY;
  let bestNaiveSeconds = Number.POSITIVE_INFINITY;
  let treeP50 = Number.POSITIVE_INFINITY;
  let treeP99 = Number.POSITIVE_INFINITY;
  let naiveP50 = Number.POSITIVE_INFINITY;
  let naiveP99 = Number.POSITIVE_INFINITY;
  let stats: ReturnType<KvIndexer["stats"]> | undefined;
  // Small workloads run in a few ms: repeat them more, so the best round is not a cold one.
  const rounds = Math.max(config.rounds, Math.ceil(1_000_000 / events.length));
  // One pair of closures for every round, reading the round's indexer from a
  // variable: a closure per round let V8 inline each round's closure into the
  // timing loop, and when that round's indexer was collected the optimized
  // code went with it ("weak objects"), so every round measured a cold apply
  // path. A router keeps one indexer, and its code, for its whole life. The
  // baseline is driven the same way.
  let indexer = new KvIndexer({ blockSize: config.blockSize });
  const apply = (event: KvCacheEvent): void => {
    indexer.applyEvent(event);
  };
  const find = (hashes: readonly string[]): ReadonlyMap<string, number> => indexer.findMatchesForHashes(hashes);
  let naive = new NaiveIndex();
  const applyNaive = (event: KvCacheEvent): void => naive.apply(event);
  const findNaive = (hashes: readonly string[]): ReadonlyMap<string, number> => naive.findMatches(hashes);
  for (let round = 0; round < rounds; round++) {
    // The previous round's index is garbage before the collection, not during the timed apply.
    indexer = new KvIndexer({ blockSize: config.blockSize });
    globalThis.gc?.();
    bestTreeSeconds = Math.min(bestTreeSeconds, timeApply(apply, events));
    stats = indexer.stats();
    const tree = timeQueries(find, queries);
    treeP50 = Math.min(treeP50, percentile(tree.samples, 0.5));
    treeP99 = Math.min(treeP99, percentile(tree.samples, 0.99));

    naive = new NaiveIndex();
    globalThis.gc?.();
    bestNaiveSeconds = Math.min(bestNaiveSeconds, timeApply(applyNaive, events));
    const scan = timeQueries(findNaive, queries);
    naiveP50 = Math.min(naiveP50, percentile(scan.samples, 0.5));
    naiveP99 = Math.min(naiveP99, percentile(scan.samples, 0.99));
    if (tree.matched !== scan.matched) {
      throw new Error(`indexer and baseline disagree: ${tree.matched} vs ${scan.matched} matched workers`);
    }
  }
  const eventsPerS = events.length / bestTreeSeconds;
  // What the last round's index holds: heap plus array buffers with it, less without it (the
  // workload's events and hash strings stay alive either way, so they are not counted).
  const indexBytes = retainedBytes(() => {
    indexer = new KvIndexer({ blockSize: config.blockSize });
  });
  const naiveEventsPerS = events.length / bestNaiveSeconds;
  details[variant] = {
    rounds,
    events: events.length,
    blocksPerEvent: Number((blocksInEvents / events.length).toFixed(2)),
    blocksPerS: Math.round(blocksInEvents / bestTreeSeconds),
    memberships: stats?.blocks,
    memberships_per_worker: Math.round((stats?.blocks ?? 0) / workers),
    nodes: stats?.nodes,
    index_mb: indexBytes === undefined ? null : Number((indexBytes / 1e6).toFixed(1)),
    find_matches_naive_p50_us: Number(naiveP50.toFixed(2)),
    find_matches_naive_p99_us: Number(naiveP99.toFixed(2)),
  };
  results.push(
    result("events_per_s", variant, eventsPerS, "events/s", "naive-map", naiveEventsPerS, ">= 1M events/s (one core)"),
    result("find_matches_p50_us", variant, treeP50, "us", "naive-map", naiveP50, "lower is better"),
    result("find_matches_p99_us", variant, treeP99, "us", "naive-map", naiveP99, "< 50 us (lower is better)"),
  );
  console.log(`${variant}: ${JSON.stringify(details[variant])}`);
}

writeReport("indexer", { ...config, quick, workloads: details }, results, { quick });
