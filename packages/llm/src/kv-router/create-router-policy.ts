import type { NatsConnection } from "@nats-io/transport-node";
import {
  type EventPlane,
  type Logger,
  MemoryEventPlane,
  random,
  routerForMode,
  silentLogger,
  TdistError,
} from "@tdist/runtime";
import type { Registry } from "prom-client";
import type { KvCacheEvent } from "../kv/kv-events.js";
import { type KvResyncRequest, kvResyncSubject } from "../kv/kv-resync.js";
import { JetStreamKvEventLog } from "./jetstream-kv-event-log.js";
import { kvEventsSubject, MemoryKvEventHistory } from "./kv-event-history.js";
import { KvIndexer, type KvIndexerOptions, type KvIndexerSnapshot } from "./kv-indexer.js";
import { KvRouter, type KvRouterOptions } from "./kv-router.js";
import { BasicLlmRouter, type LlmRouter } from "./llm-router.js";
import { type LlmdWeightedScorerOptions, LlmdWeightedScorerPolicy } from "./llmd-weighted-scorer-policy.js";
import { ReplicaSync } from "./replica-sync.js";
import type { RouterClock } from "./router-clock.js";
import { RouterMetrics } from "./router-metrics.js";
import { type SglangCacheAwareOptions, SglangCacheAwarePolicy } from "./sglang-cache-aware-policy.js";
import { loadMetricsSubject, WorkerLoadTracker } from "./worker-load-tracker.js";

/** Every routing mode the LLM stack offers (`--router-mode`). */
export const LLM_ROUTER_MODES = [
  "round-robin",
  "random",
  "least-loaded",
  "power-of-two",
  "kv",
  "kv-approx",
  "sglang",
  "llm-d",
] as const;

export type LlmRouterMode = (typeof LLM_ROUTER_MODES)[number];

export function isLlmRouterMode(value: unknown): value is LlmRouterMode {
  return typeof value === "string" && (LLM_ROUTER_MODES as readonly string[]).includes(value);
}

export interface RouterPolicyOptions {
  /** Tokens per KV block: the model card's `kvBlockSize`. */
  blockSize: number;
  /** The workers' namespace (event subjects). Required by `kv`, `llm-d` and replica sync. */
  namespace?: string;
  /**
   * The workers' component. `kv` subscribes to its KV events (all
   * components of the namespace when omitted, then without a JetStream
   * replay); `llm-d` to its load metrics.
   */
  component?: string;
  /** The event plane (or give `runtime`, whose plane is opened). */
  eventPlane?: EventPlane;
  runtime?: { eventPlane(): Promise<EventPlane> };
  /** Prometheus registry for the router metrics (the frontend's). */
  registry?: Registry;
  metricsPrefix?: string;
  /** `model` label of the metrics. */
  modelName?: string;
  /** Share active sequences with other router replicas over the event plane (`kv`, `kv-approx`). Default false. */
  replicaSync?: boolean;
  /**
   * Start warm (`kv`): `auto` replays the event history — the in-process ring
   * on a memory plane, the JetStream stream on NATS — before going live;
   * `none` starts cold. Default `auto`.
   */
  eventHistory?: "auto" | "none";
  /** A snapshot to restore before replaying (`kv`); JetStream replay resumes after its stream sequence. */
  snapshot?: KvIndexerSnapshot;
  /** Longest wait for the startup replay before serving (it then goes on in the background). Default 10 000 ms. */
  warmupTimeoutMs?: number;
  /** JetStream stream limits (cluster `kv`). */
  jetstream?: { maxAgeMs?: number; maxMessages?: number };
  /** KV router knobs: overlapWeight, temperature, busyThresholds, approxTtlMs, maxBlocks, ... */
  kv?: Omit<KvRouterOptions, "blockSize" | "mode" | "loads" | "replicaSync" | "indexer" | "metrics" | "clock">;
  sglang?: Omit<SglangCacheAwareOptions, "blockSize" | "metrics" | "clock" | "modelName">;
  llmd?: Omit<LlmdWeightedScorerOptions, "blockSize" | "loads" | "metrics" | "clock" | "modelName">;
  clock?: RouterClock;
  rng?: () => number;
  logger?: Logger;
}

function requireOption<T>(mode: string, name: string, value: T | undefined): T {
  if (value === undefined) throw new TdistError("invalid_option", `router mode ${mode} needs the ${name} option`);
  return value;
}

/**
 * Builds the routing policy for one model. Every mode returns an
 * {@link LlmRouter}: a runtime `RouterPolicy` for the model's client plus
 * the lifecycle hooks. Modes that follow the event plane (`kv`: KV events
 * and load metrics; `llm-d`: load metrics; replica sync) subscribe before
 * returning; `close()` ends the subscriptions.
 *
 * ```ts
 * const router = await createRouterPolicy("kv", {
 *   blockSize: card.kvBlockSize, runtime, namespace, component,
 *   registry: frontend.metrics.registry, modelName: card.name,
 * });
 * const client = await endpoint.client({ router });
 * ```
 */
export async function createRouterPolicy(mode: LlmRouterMode, options: RouterPolicyOptions): Promise<LlmRouter> {
  if (!isLlmRouterMode(mode)) {
    throw new TdistError(
      "invalid_option",
      `unknown router mode ${JSON.stringify(mode)}; expected one of ${LLM_ROUTER_MODES.join(", ")}`,
    );
  }
  if (!Number.isInteger(options?.blockSize) || options.blockSize < 1) {
    throw new TdistError("invalid_option", `blockSize must be a positive integer, got ${String(options?.blockSize)}`);
  }
  const logger = (options.logger ?? silentLogger).child({ router: mode });
  const metrics = options.registry ? RouterMetrics.forRegistry(options.registry, options.metricsPrefix) : undefined;
  const common = {
    ...(metrics ? { metrics } : {}),
    ...(options.modelName === undefined ? {} : { modelName: options.modelName }),
    ...(options.clock ? { clock: options.clock } : {}),
  };
  switch (mode) {
    case "round-robin":
    case "least-loaded":
    case "power-of-two":
      return new BasicLlmRouter(routerForMode(mode), options.blockSize);
    case "random":
      return new BasicLlmRouter(random(options.rng), options.blockSize);
    case "sglang":
      return new SglangCacheAwarePolicy({ ...options.sglang, ...common, blockSize: options.blockSize });
    case "llm-d": {
      const plane = await eventPlaneOf(options);
      const loads = new WorkerLoadTracker({ logger });
      const controller = new AbortController();
      if (plane) {
        const namespace = requireOption(mode, "namespace", options.namespace);
        await loads.subscribe(plane, loadMetricsSubject(namespace, options.component), controller.signal);
      } else {
        logger.warn({}, "llm-d router without an event plane: queue and KV utilisation scores stay flat");
      }
      const policy = new LlmdWeightedScorerPolicy({
        ...options.llmd,
        ...common,
        ...(options.rng ? { rng: options.rng } : {}),
        blockSize: options.blockSize,
        loads,
      });
      const close = policy.close.bind(policy);
      policy.close = async () => {
        controller.abort();
        await close();
      };
      return policy;
    }
    case "kv":
    case "kv-approx":
      return createKvRouter(mode, options, logger, common);
  }
}

async function eventPlaneOf(options: RouterPolicyOptions): Promise<EventPlane | undefined> {
  return options.eventPlane ?? (await options.runtime?.eventPlane());
}

/** How long a router waits before asking the same worker to resync again. */
const RESYNC_REQUEST_INTERVAL_MS = 1_000;

/**
 * Asks a worker whose KV events had a gap to re-send its state (at most once
 * a second per worker), counting the gap in the router metrics.
 */
function resyncRequester(
  plane: EventPlane,
  namespace: string,
  logger: Logger,
  { metrics, modelName }: { metrics?: RouterMetrics; modelName?: string },
): KvIndexerOptions["onResync"] {
  const lastAsked = new Map<string, number>();
  return (workerId, gap) => {
    metrics?.kvEventGaps.inc({ model: modelName ?? "unknown" });
    const now = Date.now();
    if (now - (lastAsked.get(workerId) ?? Number.NEGATIVE_INFINITY) < RESYNC_REQUEST_INTERVAL_MS) return;
    lastAsked.set(workerId, now);
    const request: KvResyncRequest = { workerId, ...gap };
    plane.publish(kvResyncSubject(namespace), request).catch((err: unknown) => {
      logger.warn({ err, workerId }, "asking a worker to resync its KV events failed");
    });
  };
}

function malformedEventCounter(metrics: RouterMetrics, modelName: string | undefined): () => void {
  const labels = { model: modelName ?? "unknown" };
  return () => metrics.kvMalformedEvents.inc(labels);
}

async function createKvRouter(
  mode: "kv" | "kv-approx",
  options: RouterPolicyOptions,
  logger: Logger,
  common: Pick<KvRouterOptions, "metrics" | "modelName" | "clock">,
): Promise<KvRouter> {
  const plane = await eventPlaneOf(options);
  const events = mode === "kv";
  if (events && plane === undefined) {
    throw new TdistError("invalid_option", "router mode kv needs an event plane (eventPlane or runtime) for KV events");
  }
  const controller = new AbortController();
  const { signal } = controller;
  const loops: Promise<unknown>[] = [];
  const routerId = options.kv?.routerId ?? Math.random().toString(16).slice(2, 14);
  let loads: WorkerLoadTracker | undefined;
  let replicaSync: ReplicaSync | undefined;
  let indexer: KvIndexer | undefined;
  try {
    if (plane) {
      const namespace = requireOption(mode, "namespace", options.namespace);
      loads = new WorkerLoadTracker({ logger });
      loops.push((await loads.subscribe(plane, loadMetricsSubject(namespace, options.component), signal)).done);
      if (options.replicaSync) {
        const component = requireOption(mode, "component (for replica sync)", options.component);
        replicaSync = new ReplicaSync(plane, namespace, component, routerId, { logger });
      }
    }
    if (events && plane) {
      indexer = new KvIndexer({
        blockSize: options.blockSize,
        logger,
        onResync: resyncRequester(plane, requireOption(mode, "namespace", options.namespace), logger, common),
        ...(common.metrics ? { onMalformedEvent: malformedEventCounter(common.metrics, common.modelName) } : {}),
        ...(options.clock ? { clock: options.clock } : {}),
        ...(options.kv?.maxBlocks === undefined ? {} : { maxBlocks: options.kv.maxBlocks }),
        ...(options.kv?.pruneTargetRatio === undefined ? {} : { pruneTargetRatio: options.kv.pruneTargetRatio }),
      });
      if (options.snapshot) indexer.restore(options.snapshot);
      loops.push((await followKvEvents(indexer, plane, options, logger, signal)).done);
    }
  } catch (err) {
    controller.abort();
    throw err;
  }
  const router = new KvRouter({
    ...options.kv,
    ...common,
    blockSize: options.blockSize,
    mode,
    routerId,
    logger,
    ...(options.rng ? { rng: options.rng } : {}),
    ...(indexer ? { indexer } : {}),
    ...(loads ? { loads } : {}),
    ...(replicaSync ? { replicaSync } : {}),
  });
  if (replicaSync) loops.push((await replicaSync.start((event) => router.applyReplicaEvent(event), signal)).done);
  router.onClose(async () => {
    controller.abort();
    await Promise.allSettled(loops);
  });
  return router;
}

/**
 * Starts following KV events: replays the history (JetStream stream or the
 * in-process ring) and goes live. Resolves once the replay is done (or
 * `warmupTimeoutMs` passed); `done` settles when following ends.
 */
async function followKvEvents(
  indexer: KvIndexer,
  plane: EventPlane,
  options: RouterPolicyOptions,
  logger: Logger,
  signal: AbortSignal,
): Promise<{ done: Promise<void> }> {
  const namespace = options.namespace as string;
  const subject = kvEventsSubject(namespace, options.component);
  const history = options.eventHistory ?? "auto";
  const warmupTimeoutMs = options.warmupTimeoutMs ?? 10_000;
  const connection = (plane as { connection?: NatsConnection }).connection;
  if (history === "auto" && plane.kind === "nats" && connection !== undefined && options.component !== undefined) {
    let log: JetStreamKvEventLog | undefined;
    try {
      log = await JetStreamKvEventLog.open(connection, {
        namespace,
        component: options.component,
        logger,
        ...options.jetstream,
      });
    } catch (err) {
      logger.warn({ err }, "no JetStream KV event stream; following live events only (a restart starts cold)");
    }
    if (log !== undefined) return followJetStream(indexer, log, warmupTimeoutMs, logger, signal);
  }
  const subscription = plane.subscribe<KvCacheEvent>(subject, { signal, maxBuffered: 100_000 });
  await subscription.ready;
  if (history === "auto" && plane instanceof MemoryEventPlane) {
    // Live events already buffer in the subscription; the overlap with the ring is dropped by event id.
    const ring = MemoryKvEventHistory.forBus(plane.bus, subject);
    for (const event of ring.events()) indexer.applyEvent(event);
  }
  const done = indexer.follow(subscription).catch((err: unknown) => {
    logger.warn({ err }, "KV event subscription failed");
  });
  return { done };
}

async function followJetStream(
  indexer: KvIndexer,
  log: JetStreamKvEventLog,
  warmupTimeoutMs: number,
  logger: Logger,
  signal: AbortSignal,
): Promise<{ done: Promise<void> }> {
  const target = await log.lastSequence();
  let markWarm: () => void = () => {};
  const warm = new Promise<void>((resolve) => {
    markWarm = resolve;
  });
  if ((indexer.streamSequence ?? 0) >= target) markWarm();
  const fromSequence = (indexer.streamSequence ?? 0) + 1;
  const done = (async () => {
    for await (const { sequence, event } of log.events({ fromSequence, signal })) {
      indexer.applyEvent(event);
      indexer.streamSequence = sequence;
      if (sequence >= target) markWarm();
    }
  })()
    .catch((err: unknown) => {
      if (!signal.aborted) logger.warn({ err }, "KV event stream consumer failed");
    })
    .finally(markWarm);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    warm,
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        logger.warn({ target, reached: indexer.streamSequence }, "KV event replay still running; serving meanwhile");
        resolve();
      }, warmupTimeoutMs);
    }),
  ]);
  clearTimeout(timer);
  return { done };
}
