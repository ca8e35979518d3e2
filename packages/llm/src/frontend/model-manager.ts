import type {
  Client,
  DistributedRuntime,
  Instance,
  Logger,
  PrefixWatch,
  RouterMode,
  RouterPolicy,
} from "@tdist/runtime";
import { delay, routerForMode, TdistError } from "@tdist/runtime";
import type { Registry } from "prom-client";
import type { DisaggregationMetrics } from "../disagg/disagg-metrics.js";
import { DEFAULT_DISAGGREGATION, type ResolvedDisaggregationOptions } from "../disagg/disagg-policy.js";
import { PrefillRouter, type WorkerPool } from "../disagg/prefill-router.js";
import { createRouterPolicy, type LlmRouterMode } from "../kv-router/create-router-policy.js";
import type { BusyThresholds } from "../kv-router/kv-scheduler.js";
import type { LlmRouter } from "../kv-router/llm-router.js";
import { MalformedRecordMetrics } from "../model-card/malformed-record-metrics.js";
import { type ModelCard, modelCardPrefix, parseModelCard } from "../model-card/model-card.js";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { fetchTokenizerJson } from "./tokenizer-fetch.js";

/** Builds the per-model processing (tokenizer, template) from a card and its tokenizer.json. */
export type PipelineFactory<P> = (card: ModelCard, tokenizerJson: string) => Promise<P>;

/** The frontend's KV router knobs (`--kv-overlap-weight`, `--router-temperature`, ...). */
export interface KvRouterKnobs {
  overlapWeight?: number;
  temperature?: number;
  replicaSync?: boolean;
  /** Skip busy workers; shed the request (503 `all_workers_busy`) when all are busy. */
  busyThresholds?: BusyThresholds;
}

export interface ModelWorker {
  instanceId: string;
  key: string;
  card: ModelCard;
}

/** One served model: its workers' cards, a client to their endpoint, and its pipeline. */
export interface ModelEntry<P> {
  readonly name: string;
  readonly card: ModelCard;
  readonly endpointPath: string;
  readonly workers: ReadonlyMap<string, ModelWorker>;
  readonly client: Client<PreprocessedRequest, EngineOutput>;
  readonly pipeline: P;
  readonly createdAt: number;
  /** The model's LLM router (KV-aware and peer policies), when the mode is one. */
  readonly llmRouter: LlmRouter | undefined;
  /** Live instances that serve this model (the endpoint may also host other models). */
  liveWorkers(): Instance[];
  /**
   * The model's prefill router while it has prefill workers or decode
   * workers (undefined when every worker is aggregated: requests then go
   * through `client` as they are).
   */
  readonly prefillRouter: PrefillRouter | undefined;
  /** The model's prefill workers (component `prefill`), by instance id. */
  readonly prefillWorkers: ReadonlyMap<string, ModelWorker>;
}

export interface ModelManagerOptions<P> {
  createPipeline: PipelineFactory<P>;
  /**
   * Routing: a runtime policy or mode, or an LLM router mode (`kv`,
   * `kv-approx`, `sglang`, `llm-d`, or the basic ones), built per model from
   * its card (block size) with the hooks that keep its load predictions.
   */
  router?: RouterPolicy | RouterMode | LlmRouterMode;
  /** Where LLM routers register their metrics (the frontend's registry). */
  registry?: Registry;
  /** KV router knobs (`kv`, `kv-approx`): overlap weight, softmax temperature, replica sync, busy thresholds. */
  kvRouter?: KvRouterKnobs;
  /** Only watch cards in this namespace (default: all). */
  namespace?: string;
  /** When requests are prefilled on prefill workers (default: `DEFAULT_DISAGGREGATION`). */
  disaggregation?: ResolvedDisaggregationOptions;
  /** Where the prefill router counts its decisions and transfers (the frontend's metrics). */
  disaggregationMetrics?: DisaggregationMetrics;
  logger: Logger;
}

/** A served model's health: live workers out of those registered. */
export interface ModelHealth {
  name: string;
  /** Workers whose card is registered. */
  workers: number;
  /** Of those, the ones not known to be unreachable. */
  liveWorkers: number;
  /** Its prefill workers registered, and live (0 and 0 when it has none: it is served aggregated). */
  prefillWorkers: number;
  livePrefillWorkers: number;
}

interface MutableEntry<P> {
  name: string;
  card: ModelCard;
  endpointPath: string;
  workers: Map<string, ModelWorker>;
  client?: Client<PreprocessedRequest, EngineOutput>;
  pipeline?: P;
  createdAt: number;
  loading?: Promise<void>;
  /** Bumped whenever `workers` changes, to invalidate routing caches. */
  workersVersion: number;
  llmRouter: LlmRouter | undefined;
  liveWorkers(): Instance[];
  readonly prefillRouter: PrefillRouter | undefined;
  readonly prefillWorkers: ReadonlyMap<string, ModelWorker>;
  router?: PrefillRouter;
  closers: (() => void)[];
}

/** A model's prefill workers: tracked apart from its entry, which only serving (decode) workers create. */
interface PrefillPoolState {
  name: string;
  endpointPath: string;
  workers: Map<string, ModelWorker>;
  workersVersion: number;
  llmRouter: LlmRouter | undefined;
  loading?: Promise<void>;
  client?: Client<PreprocessedRequest, EngineOutput>;
  pool?: WorkerPool;
  closers: (() => void)[];
}

const NO_WORKERS: ReadonlyMap<string, ModelWorker> = new Map();
const EMPTY_EXCLUDE: ReadonlySet<string> = new Set();

const RUNTIME_MODES: readonly string[] = ["round-robin", "random", "least-loaded", "power-of-two"];

function isRuntimeMode(mode: string): mode is RouterMode {
  return RUNTIME_MODES.includes(mode);
}

/**
 * Restricts routing to the instances that registered this model's card, so
 * several models can share one endpoint path. The filtered list is cached
 * until the client's instance list or the model's workers change.
 */
function modelInstanceFilter(entry: { workers: Map<string, ModelWorker>; workersVersion: number }) {
  let lastInput: readonly Instance[] | undefined;
  let lastVersion = -1;
  let lastOutput: Instance[] = [];
  return (instances: readonly Instance[]): Instance[] => {
    if (instances !== lastInput || entry.workersVersion !== lastVersion) {
      lastInput = instances;
      lastVersion = entry.workersVersion;
      lastOutput = instances.filter((instance) => entry.workers.has(instance.instanceId));
    }
    return lastOutput;
  };
}

/** A pool's pick now, over the model's live instances, with the client's in-flight counts. */
function pickNow(
  policy: RouterPolicy,
  client: Client<PreprocessedRequest, EngineOutput>,
  forModel: (instances: readonly Instance[]) => Instance[],
): WorkerPool["pick"] {
  const inFlight = (instanceId: string): number => client.inFlight(instanceId);
  return (request) => policy.pick(forModel(client.instances()), { inFlight, request, exclude: EMPTY_EXCLUDE });
}

/**
 * Watches `v1/models/` and keeps the set of served models live: a model
 * appears when its first worker registers a card (after its tokenizer is
 * fetched and verified) and disappears when its last worker's card goes.
 */
export class ModelManager<P extends { close?(): Promise<void> }> {
  private readonly entries = new Map<string, MutableEntry<P>>();
  private readonly byKey = new Map<string, string>();
  private readonly prefillPools = new Map<string, PrefillPoolState>();
  private readonly prefillByKey = new Map<string, string>();
  private readonly closeController = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly changeListeners = new Set<() => void>();
  private readonly malformed: MalformedRecordMetrics | undefined;
  private readonly onMalformedInstance = (): void => this.malformed?.instance();

  constructor(
    private readonly runtime: DistributedRuntime,
    private readonly options: ModelManagerOptions<P>,
  ) {
    this.malformed = options.registry ? MalformedRecordMetrics.forRegistry(options.registry) : undefined;
  }

  private get prefix(): string {
    return this.options.namespace ? `${modelCardPrefix()}${this.options.namespace}/` : modelCardPrefix();
  }

  async start(): Promise<void> {
    const watch = await this.runtime.discovery.watchPrefix(this.prefix, { signal: this.closeController.signal });
    await this.applySnapshot(watch);
    this.loop = this.follow(watch);
  }

  /** Models that are ready to serve (pipeline built), sorted by name. */
  list(): ModelEntry<P>[] {
    return [...this.entries.values()]
      .filter((entry): entry is MutableEntry<P> & { client: Client<PreprocessedRequest, EngineOutput>; pipeline: P } =>
        Boolean(entry.client && entry.pipeline),
      )
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  get(name: string): ModelEntry<P> | undefined {
    const entry = this.entries.get(name);
    return entry?.client && entry.pipeline ? (entry as ModelEntry<P>) : undefined;
  }

  /** The prefill workers registered for `name` (a model may have them before any worker serves it). */
  prefillWorkers(name: string): ReadonlyMap<string, ModelWorker> {
    return this.prefillPools.get(name)?.workers ?? NO_WORKERS;
  }

  /** Every ready model with how many of its workers are live. */
  health(): ModelHealth[] {
    return this.list().map((entry) => ({
      name: entry.name,
      workers: entry.workers.size,
      liveWorkers: entry.liveWorkers().length,
      prefillWorkers: entry.prefillWorkers.size,
      livePrefillWorkers: this.prefillPools.get(entry.name)?.pool?.liveWorkers().length ?? 0,
    }));
  }

  /** Calls `listener` whenever models appear, become ready or disappear. */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Waits until `name` is ready (or any model when omitted). */
  async waitForModel(name?: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const ready = (): boolean => (name === undefined ? this.list().length > 0 : this.get(name) !== undefined);
    while (!ready()) {
      if (Date.now() > deadline) throw new Error(`model ${name ?? "(any)"} not ready after ${timeoutMs} ms`);
      await delay(10);
    }
  }

  async close(): Promise<void> {
    this.closeController.abort();
    await this.loop;
    for (const entry of this.entries.values()) {
      await entry.loading?.catch(() => {});
      await entry.client?.close();
      await entry.llmRouter?.close();
      await entry.pipeline?.close?.();
      for (const closer of entry.closers) closer();
    }
    this.entries.clear();
    for (const pool of this.prefillPools.values()) {
      await pool.loading?.catch(() => {});
      await this.closePool(pool);
    }
    this.prefillPools.clear();
  }

  private async applySnapshot(watch: PrefixWatch): Promise<void> {
    for (const key of [...this.byKey.keys(), ...this.prefillByKey.keys()]) this.remove(key);
    await Promise.all(watch.initial.map(({ key, value }) => this.put(key, value)));
  }

  private async follow(initial: PrefixWatch): Promise<void> {
    let watch = initial;
    const signal = this.closeController.signal;
    for (;;) {
      try {
        for await (const event of watch) {
          if (event.type === "put") void this.put(event.key, event.value);
          else this.remove(event.key);
        }
      } catch (err) {
        if (!signal.aborted) this.options.logger.warn({ err }, "model watch failed; re-watching");
      }
      if (signal.aborted) return;
      try {
        await delay(500, signal);
        watch = await this.runtime.discovery.watchPrefix(this.prefix, { signal });
        await this.applySnapshot(watch);
      } catch (err) {
        if (signal.aborted) return;
        this.options.logger.warn({ err }, "cannot re-watch models; retrying");
      }
    }
  }

  private async put(key: string, value: string): Promise<void> {
    let card: ModelCard;
    try {
      card = parseModelCard(value);
    } catch (err) {
      this.options.logger.warn({ key: key.slice(0, 256), err }, "ignoring invalid model card");
      this.malformed?.modelCard(true);
      return;
    }
    const parts = key.slice(modelCardPrefix().length).split("/");
    if (parts.length !== 4 || parts.some((part) => part.length === 0)) {
      this.options.logger.warn({ key: key.slice(0, 256) }, "ignoring invalid model card");
      this.malformed?.modelCard(true);
      return;
    }
    const [namespace, component, endpoint, instanceId] = parts as [string, string, string, string];
    const endpointPath = `${namespace}/${component}/${endpoint}`;
    if (card.role === "prefill" || this.prefillByKey.has(key)) {
      // A worker that changed role re-registers under another key; this one keeps its pool.
      if (card.role !== "prefill") this.remove(key);
      else return this.putPrefill(key, card, namespace, component, endpoint, instanceId);
    }
    const previousName = this.byKey.get(key);
    if (previousName !== undefined && previousName !== card.name) this.remove(key);
    let entry = this.entries.get(card.name);
    if (entry && entry.endpointPath !== endpointPath) {
      this.options.logger.warn(
        { model: card.name, endpoint: endpointPath, serving: entry.endpointPath },
        "model already served from another endpoint; ignoring this worker",
      );
      return;
    }
    if (!entry) {
      const manager = this;
      const name = card.name;
      const created: MutableEntry<P> = {
        name: card.name,
        card,
        endpointPath,
        workers: new Map(),
        createdAt: Math.floor(Date.now() / 1000),
        workersVersion: 0,
        llmRouter: undefined,
        liveWorkers: () => [],
        closers: [],
        get prefillRouter() {
          return manager.activePrefillRouter(name);
        },
        get prefillWorkers() {
          return manager.prefillWorkers(name);
        },
      };
      entry = created;
      this.entries.set(card.name, entry);
    }
    entry.workers.set(instanceId, { instanceId, key, card });
    entry.workersVersion++;
    this.registerWithRouter(entry, instanceId, card);
    this.byKey.set(key, card.name);
    if (!entry.loading) {
      const target = entry;
      target.loading = this.load(target, namespace, component, endpoint, instanceId);
    }
    await entry.loading;
  }

  private async load(
    entry: MutableEntry<P>,
    namespace: string,
    component: string,
    endpoint: string,
    instanceId: string,
  ): Promise<void> {
    try {
      const json = await fetchTokenizerJson(this.runtime, entry.card, instanceId, {
        signal: this.closeController.signal,
      });
      const pipeline = await this.options.createPipeline(entry.card, json);
      const base = this.options.router ?? "round-robin";
      let policy: RouterPolicy;
      if (typeof base === "string" && !isRuntimeMode(base)) {
        const llmRouter = await createRouterPolicy(base, {
          blockSize: entry.card.kvBlockSize,
          namespace,
          component,
          runtime: this.runtime,
          modelName: entry.name,
          ...(this.options.registry ? { registry: this.options.registry } : {}),
          ...(this.options.kvRouter?.replicaSync ? { replicaSync: true } : {}),
          kv: {
            ...(this.options.kvRouter?.overlapWeight !== undefined
              ? { overlapWeight: this.options.kvRouter.overlapWeight }
              : {}),
            ...(this.options.kvRouter?.temperature !== undefined
              ? { temperature: this.options.kvRouter.temperature }
              : {}),
            ...(this.options.kvRouter?.busyThresholds !== undefined
              ? { busyThresholds: this.options.kvRouter.busyThresholds }
              : {}),
          },
        });
        entry.llmRouter = llmRouter;
        for (const worker of entry.workers.values()) this.registerWithRouter(entry, worker.instanceId, worker.card);
        policy = llmRouter;
      } else {
        policy = typeof base === "string" ? routerForMode(base) : base;
      }
      const forModel = modelInstanceFilter(entry);
      const router: RouterPolicy = {
        name: `${policy.name}(model ${entry.name})`,
        pick: (all, pickContext) => policy.pick(forModel(all), pickContext),
      };
      const client = await this.runtime
        .namespace(namespace)
        .component(component)
        .endpoint(endpoint)
        .client<PreprocessedRequest, EngineOutput>({ router, onMalformedRecord: this.onMalformedInstance });
      entry.liveWorkers = () => forModel(client.instances());
      entry.router = new PrefillRouter({
        model: entry.name,
        blockSize: entry.card.kvBlockSize,
        decode: { client, liveWorkers: entry.liveWorkers, pick: pickNow(policy, client, forModel) },
        prefill: () => this.prefillPools.get(entry.name)?.pool,
        options: this.options.disaggregation ?? DEFAULT_DISAGGREGATION,
        metrics: this.options.disaggregationMetrics,
        logger: this.options.logger,
      });
      const decodeRouter = entry.llmRouter;
      if (this.options.disaggregationMetrics && decodeRouter?.predictedLoads) {
        entry.closers.push(
          this.options.disaggregationMetrics.addPrefillQueueSource({
            model: entry.name,
            workerType: "decode",
            predictedLoads: () => decodeRouter.predictedLoads?.() ?? [],
          }),
        );
      }
      if (this.entries.get(entry.name) !== entry) {
        for (const closer of entry.closers) closer();
        await client.close();
        await pipeline.close?.();
        return;
      }
      entry.pipeline = pipeline;
      entry.client = client;
      this.options.logger.info({ model: entry.name, endpoint: entry.endpointPath }, "model added");
      this.notify();
    } catch (err) {
      if (this.closeController.signal.aborted) return;
      this.options.logger.error({ err, model: entry.name }, "cannot load model; will retry when a worker re-registers");
      // A tokenizer that failed verification: the card lied about it.
      if (TdistError.is(err, "bad_request")) this.malformed?.modelCard(false);
      if (this.entries.get(entry.name) !== entry) return;
      entry.loading = undefined;
      // The failed worker's card must not keep the model from its other workers: drop it, load from the next one's.
      const failed = entry.workers.get(instanceId);
      if (failed) this.remove(failed.key);
      const nextWorker = this.entries.get(entry.name) === entry ? entry.workers.values().next().value : undefined;
      if (nextWorker !== undefined) {
        entry.card = nextWorker.card;
        entry.loading = this.load(entry, namespace, component, endpoint, nextWorker.instanceId);
      }
    }
  }

  private remove(key: string): void {
    if (this.prefillByKey.has(key)) {
      this.removePrefill(key);
      return;
    }
    const name = this.byKey.get(key);
    if (name === undefined) return;
    this.byKey.delete(key);
    const entry = this.entries.get(name);
    if (!entry) return;
    for (const [id, worker] of entry.workers) {
      if (worker.key !== key) continue;
      entry.workers.delete(id);
      entry.llmRouter?.removeWorker(id);
    }
    entry.workersVersion++;
    if (entry.workers.size > 0) return;
    this.entries.delete(name);
    void entry.client?.close();
    void entry.llmRouter?.close();
    void entry.pipeline?.close?.();
    for (const closer of entry.closers) closer();
    this.options.logger.info({ model: name }, "model removed");
    this.notify();
  }

  /** The model's prefill router, while it has prefill workers or decode-role workers. */
  private activePrefillRouter(name: string): PrefillRouter | undefined {
    const entry = this.entries.get(name);
    if (entry?.router === undefined) return undefined;
    if ((this.prefillPools.get(name)?.workers.size ?? 0) > 0) return entry.router;
    for (const worker of entry.workers.values()) if (worker.card.role === "decode") return entry.router;
    return undefined;
  }

  private async putPrefill(
    key: string,
    card: ModelCard,
    namespace: string,
    component: string,
    endpoint: string,
    instanceId: string,
  ): Promise<void> {
    const endpointPath = `${namespace}/${component}/${endpoint}`;
    const previousName = this.prefillByKey.get(key);
    if (previousName !== undefined && previousName !== card.name) this.removePrefill(key);
    let pool = this.prefillPools.get(card.name);
    if (pool && pool.endpointPath !== endpointPath) {
      this.options.logger.warn(
        { model: card.name, endpoint: endpointPath, serving: pool.endpointPath },
        "model's prefill workers already registered at another endpoint; ignoring this one",
      );
      return;
    }
    if (!pool) {
      pool = {
        name: card.name,
        endpointPath,
        workers: new Map(),
        workersVersion: 0,
        llmRouter: undefined,
        closers: [],
      };
      this.prefillPools.set(card.name, pool);
    }
    pool.workers.set(instanceId, { instanceId, key, card });
    pool.workersVersion++;
    this.registerPrefillWorker(pool, instanceId, card);
    this.prefillByKey.set(key, card.name);
    if (!pool.loading) {
      const target = pool;
      target.loading = this.loadPrefill(target, card, namespace, component, endpoint);
    }
    await pool.loading;
  }

  private async loadPrefill(
    pool: PrefillPoolState,
    card: ModelCard,
    namespace: string,
    component: string,
    endpoint: string,
  ): Promise<void> {
    try {
      const base = this.options.router ?? "round-robin";
      let policy: RouterPolicy;
      if (typeof base === "string" && !isRuntimeMode(base)) {
        // Prefill workers publish KV events too: route them with the same mode, on their own component.
        const llmRouter = await createRouterPolicy(base, {
          blockSize: card.kvBlockSize,
          namespace,
          component,
          runtime: this.runtime,
          modelName: pool.name,
          metricsPrefix: "tdist_prefill_router",
          ...(this.options.registry ? { registry: this.options.registry } : {}),
        });
        pool.llmRouter = llmRouter;
        for (const worker of pool.workers.values()) this.registerPrefillWorker(pool, worker.instanceId, worker.card);
        policy = llmRouter;
      } else {
        policy = typeof base === "string" ? routerForMode(base) : base;
      }
      const forModel = modelInstanceFilter(pool);
      const client = await this.runtime
        .namespace(namespace)
        .component(component)
        .endpoint(endpoint)
        .client<PreprocessedRequest, EngineOutput>({ onMalformedRecord: this.onMalformedInstance });
      pool.client = client;
      if (this.prefillPools.get(pool.name) !== pool) {
        await this.closePool(pool);
        return;
      }
      pool.pool = { client, liveWorkers: () => forModel(client.instances()), pick: pickNow(policy, client, forModel) };
      const prefillRouter = pool.llmRouter;
      if (this.options.disaggregationMetrics && prefillRouter?.predictedLoads) {
        pool.closers.push(
          this.options.disaggregationMetrics.addPrefillQueueSource({
            model: pool.name,
            workerType: "prefill",
            predictedLoads: () => prefillRouter.predictedLoads?.() ?? [],
          }),
        );
      }
      this.options.logger.info({ model: pool.name, endpoint: pool.endpointPath }, "prefill workers added");
    } catch (err) {
      if (this.closeController.signal.aborted) return;
      this.options.logger.error(
        { err, model: pool.name },
        "cannot route to prefill workers; will retry when one re-registers",
      );
      if (this.prefillPools.get(pool.name) === pool) pool.loading = undefined;
    }
  }

  private removePrefill(key: string): void {
    const name = this.prefillByKey.get(key);
    if (name === undefined) return;
    this.prefillByKey.delete(key);
    const pool = this.prefillPools.get(name);
    if (!pool) return;
    for (const [id, worker] of pool.workers) {
      if (worker.key !== key) continue;
      pool.workers.delete(id);
      pool.llmRouter?.removeWorker(id);
    }
    pool.workersVersion++;
    if (pool.workers.size > 0) return;
    this.prefillPools.delete(name);
    void this.closePool(pool);
    this.options.logger.info({ model: name }, "prefill workers removed");
  }

  private async closePool(pool: PrefillPoolState): Promise<void> {
    for (const closer of pool.closers.splice(0)) closer();
    pool.pool = undefined;
    await pool.client?.close();
    await pool.llmRouter?.close();
  }

  private registerPrefillWorker(pool: PrefillPoolState, instanceId: string, card: ModelCard): void {
    try {
      pool.llmRouter?.registerWorker(instanceId, card);
    } catch (err) {
      this.options.logger.error({ err, model: pool.name, instanceId }, "prefill worker refused by the router");
    }
  }

  private registerWithRouter(entry: MutableEntry<P>, instanceId: string, card: ModelCard): void {
    try {
      entry.llmRouter?.registerWorker(instanceId, card);
    } catch (err) {
      // A KV block size that differs from the router's: the worker is refused, loudly.
      this.options.logger.error({ err, model: entry.name, instanceId }, "worker refused by the router");
    }
  }

  private notify(): void {
    for (const listener of this.changeListeners) listener();
  }
}
