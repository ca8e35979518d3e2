/**
 * One routed request as the router's load prediction sees it. `blockHashes`
 * are its prompt's full blocks (shared prefixes count once per worker).
 */
export interface ActiveRequest {
  /** Unique across router replicas: `{routerId}/{requestId}`. */
  key: string;
  workerId: string;
  blockHashes: readonly string[];
  /** Prompt tokens the worker must compute (not cached), until the first token. */
  prefillTokens: number;
  /** When it was added (router clock, ms), for expiry of requests whose end was never reported. */
  addedAt: number;
}

/** Predicted load of one worker. */
export interface PredictedLoad {
  /** Uncached prompt tokens of requests still in prefill. */
  prefillTokens: number;
  /**
   * KV blocks its active requests occupy: distinct full prompt blocks (a
   * prefix shared by several requests counts once) plus one block per
   * request for its partial block and output.
   */
  decodeBlocks: number;
  requests: number;
}

interface WorkerState {
  blockRefs: Map<string, number>;
  prefillTokens: number;
  requests: number;
}

/**
 * The router's prediction of each worker's load, from its own decisions
 * (and its replicas', when synced): updated when a request is routed
 * (`add`), when its first token arrives (`markPrefillDone`) and when it ends
 * (`free`). Engines report load too, but late; this view moves at routing
 * speed, which is what keeps a burst of requests from piling onto one worker.
 */
export class ActiveSequences {
  private readonly requests = new Map<string, ActiveRequest & { prefilling: boolean }>();
  private readonly workers = new Map<string, WorkerState>();

  get size(): number {
    return this.requests.size;
  }

  /** Adds a request; a request already present under the key is replaced (a retry to another worker). */
  add(request: ActiveRequest): void {
    this.free(request.key);
    const worker = this.worker(request.workerId);
    for (const hash of request.blockHashes) worker.blockRefs.set(hash, (worker.blockRefs.get(hash) ?? 0) + 1);
    worker.prefillTokens += request.prefillTokens;
    worker.requests++;
    this.requests.set(request.key, { ...request, prefilling: true });
  }

  /** The request's prefill is done: its tokens leave the worker's prefill load. */
  markPrefillDone(key: string): void {
    const request = this.requests.get(key);
    if (request === undefined || !request.prefilling) return;
    request.prefilling = false;
    const worker = this.workers.get(request.workerId);
    if (worker) worker.prefillTokens -= request.prefillTokens;
  }

  /** The request ended: its blocks and tokens leave the worker's load. Idempotent. */
  free(key: string): boolean {
    const request = this.requests.get(key);
    if (request === undefined) return false;
    this.requests.delete(key);
    const worker = this.workers.get(request.workerId);
    if (worker === undefined) return true;
    if (request.prefilling) worker.prefillTokens -= request.prefillTokens;
    for (const hash of request.blockHashes) {
      const refs = (worker.blockRefs.get(hash) ?? 1) - 1;
      if (refs > 0) worker.blockRefs.set(hash, refs);
      else worker.blockRefs.delete(hash);
    }
    worker.requests--;
    if (worker.requests === 0) this.workers.delete(request.workerId);
    return true;
  }

  has(key: string): boolean {
    return this.requests.has(key);
  }

  load(workerId: string): PredictedLoad {
    const worker = this.workers.get(workerId);
    if (worker === undefined) return { prefillTokens: 0, decodeBlocks: 0, requests: 0 };
    return {
      prefillTokens: worker.prefillTokens,
      decodeBlocks: worker.blockRefs.size + worker.requests,
      requests: worker.requests,
    };
  }

  /** How many leading `blockHashes` are already in use on the worker (they add no decode blocks). */
  activePrefix(workerId: string, blockHashes: readonly string[]): number {
    const worker = this.workers.get(workerId);
    if (worker === undefined) return 0;
    let shared = 0;
    while (shared < blockHashes.length && worker.blockRefs.has(blockHashes[shared] as string)) shared++;
    return shared;
  }

  /** Drops every request of a worker (it left). */
  removeWorker(workerId: string): void {
    for (const [key, request] of this.requests) if (request.workerId === workerId) this.requests.delete(key);
    this.workers.delete(workerId);
  }

  /** Frees requests added before `cutoff` whose end was never reported (a lost hook, a dead replica). */
  expire(cutoff: number): number {
    let expired = 0;
    for (const [key, request] of this.requests) {
      // Insertion order is age order (a replaced request is re-inserted).
      if (request.addedAt >= cutoff) break;
      this.free(key);
      expired++;
    }
    return expired;
  }

  private worker(workerId: string): WorkerState {
    let worker = this.workers.get(workerId);
    if (worker === undefined) {
      worker = { blockRefs: new Map(), prefillTokens: 0, requests: 0 };
      this.workers.set(workerId, worker);
    }
    return worker;
  }

  /** Worker ids with active requests. */
  workerIds(): string[] {
    return [...this.workers.keys()];
  }
}
