import { kvTransferMs, MockerEngine, type MockerEngineOptions } from "@tdist/engine-mocker";
import {
  createRouterPolicy,
  type DisaggregationOutcome,
  decideDisaggregation,
  type EngineOutput,
  type LlmRouter,
  LOAD_METRICS_TOPIC,
  PREFILL_COMPONENT,
  type PreprocessedRequest,
  type ResolvedDisaggregationOptions,
  type RoutingDecision,
  type WorkerLoadMetrics,
} from "@tdist/llm";
import {
  Context,
  DistributedRuntime,
  eventSubject,
  type Instance,
  MemoryEventBus,
  MemoryEventPlane,
  mulberry32,
  type Route,
  type StreamOutcome,
  TdistError,
} from "@tdist/runtime";
import { EventClock } from "./event-clock.js";
import type { LongPromptRequest } from "./workload.js";

/** How many workers do what: `prefill` 0 is aggregated serving (every worker prefills and decodes). */
export interface Topology {
  name: string;
  prefill: number;
  decode: number;
}

export interface ClusterOptions {
  blockSize: number;
  /** Options of every engine (role, clock, ids, publisher and transfer plane are the simulation's). */
  engine: Omit<MockerEngineOptions, "workerId" | "blockSize" | "clock" | "eventPublisher" | "role" | "kvTransfer">;
  disaggregation: ResolvedDisaggregationOptions;
}

/** What one request did, in simulated ms. */
export interface RequestRecord {
  arrivedAt: number;
  firstTokenAt: number | undefined;
  /** When each output token reached the client. */
  tokenTimes: number[];
  promptTokens: number;
  outputTokens: number;
  failed: boolean;
  /** The prefill router's decision (a failed remote prefill or fetch counts as `fallback`). */
  outcome: DisaggregationOutcome;
}

export interface SimulationResult {
  topology: Topology;
  requests: RequestRecord[];
  /** First arrival to last token, simulated ms. */
  makespanMs: number;
  outcomes: Record<DisaggregationOutcome, number>;
  transfers: { count: number; payloadBytes: number; simulatedKvBytes: number; simulatedMs: number };
  /** Requests per engine, prefill engines first. */
  perWorker: number[];
  /** Settle budgets exhausted (an engine held work it never stepped); 0 in a healthy run. */
  stuckSettles: number;
  wallMs: number;
}

const NAMESPACE = "disagg-sim";
const BACKEND = "backend";
const NO_EXCLUSIONS: ReadonlySet<string> = new Set();
const COMPLETED: StreamOutcome = { status: "completed" };
const UNUSED: StreamOutcome = { status: "cancelled" };
const FAILED: StreamOutcome = { status: "failed", error: new TdistError("internal", "the simulated request failed") };

function instance(instanceId: string, component: string): Instance {
  return {
    instanceId,
    namespace: NAMESPACE,
    component,
    endpoint: "generate",
    transport: { tcp: "127.0.0.1:0" },
    metadata: {},
    registeredAt: 0,
  };
}

/**
 * Serves one workload on one topology: mocker engines on one discrete-event
 * clock, their KV events and load metrics on a private memory event plane,
 * their KV hand-offs through one runtime's KV transfer plane (the local
 * hand-off, real bytes), and in front of them the frontend's flow for each
 * request, in-process: the KV router picks the decode worker, the KV router
 * over the prefill workers picks a prefill worker, `decideDisaggregation`
 * (the frontend's policy) decides, and a remote prefill's first token and
 * KV handle go on to the decode worker.
 */
export async function simulate(
  topology: Topology,
  workload: readonly LongPromptRequest[],
  cluster: ClusterOptions,
  seed: number,
): Promise<SimulationResult> {
  const wallStart = performance.now();
  const clock = new EventClock();
  const plane = new MemoryEventPlane({ bus: new MemoryEventBus(), maxBufferedEvents: 1_000_000 });
  const runtime = await DistributedRuntime.create({ env: {}, kvTransfer: { kind: "local" } });
  const aggregated = topology.prefill === 0;
  const prefillIds = Array.from({ length: topology.prefill }, (_, i) => `prefill-${i}`);
  const decodeIds = Array.from({ length: topology.decode }, (_, i) => `${aggregated ? "agg" : "decode"}-${i}`);
  const ids = [...prefillIds, ...decodeIds];
  /** The prefill workers' own reports of prompt tokens they have queued (their load metrics). */
  const queuedPrefill = new Map<string, number>();
  const engines = ids.map((workerId, i) => {
    const component = i < topology.prefill ? PREFILL_COMPONENT : BACKEND;
    return new MockerEngine({
      ...cluster.engine,
      workerId,
      blockSize: cluster.blockSize,
      role: i < topology.prefill ? "prefill" : aggregated ? "aggregated" : "decode",
      kvTransfer: runtime.kvTransfer,
      clock: clock.forEngine(i),
      eventPublisher: {
        publish: (topic, payload) => {
          if (topic === LOAD_METRICS_TOPIC && component === PREFILL_COMPONENT) {
            queuedPrefill.set(workerId, (payload as WorkerLoadMetrics).prefillTokensQueued ?? 0);
          }
          return plane.publish(eventSubject(NAMESPACE, component, topic), payload);
        },
      },
    });
  });
  const indexOf = new Map(ids.map((id, i) => [id, i]));
  const router = async (component: string, workers: string[]): Promise<LlmRouter> => {
    const policy = await createRouterPolicy("kv", {
      blockSize: cluster.blockSize,
      eventPlane: plane,
      namespace: NAMESPACE,
      component,
      clock,
      rng: mulberry32(seed + workers.length),
      eventHistory: "none",
      modelName: "sim",
    });
    for (const id of workers) policy.registerWorker(id, { kvBlockSize: cluster.blockSize });
    return policy;
  };
  const decodeRouter = await router(BACKEND, decodeIds);
  const prefillRouter = aggregated ? undefined : await router(PREFILL_COMPONENT, prefillIds);
  const decodeInstances = decodeIds.map((id) => instance(id, BACKEND));
  const prefillInstances = prefillIds.map((id) => instance(id, PREFILL_COMPONENT));

  const outstanding = new Array<number>(ids.length).fill(0);
  const perWorker = new Array<number>(ids.length).fill(0);
  const inFlight = (id: string): number => outstanding[indexOf.get(id) as number] as number;
  const outcomes: Record<DisaggregationOutcome, number> = {
    remote: 0,
    local: 0,
    skipped_no_prefill_workers: 0,
    fallback: 0,
  };
  const transfers = { count: 0, payloadBytes: 0, simulatedKvBytes: 0, simulatedMs: 0 };
  const requests: RequestRecord[] = [];
  /** Requests between two engines (the prefill answer read, the decode request not yet started). */
  let inTransit = 0;
  let nextRequestId = 0;

  /** Streams one engine's outputs to the record; resolves with the first output (undefined when none came). */
  const stream = async (
    worker: number,
    request: PreprocessedRequest,
    record: RequestRecord,
    route: Route | undefined,
    afterStart: () => void,
  ): Promise<EngineOutput | undefined> => {
    const engine = engines[worker] as MockerEngine;
    outstanding[worker] = (outstanding[worker] as number) + 1;
    perWorker[worker] = (perWorker[worker] as number) + 1;
    let first: EngineOutput | undefined;
    let firstSeen = false;
    try {
      const iterator = engine.generate(request, new Context())[Symbol.asyncIterator]();
      let next = iterator.next();
      afterStart();
      for (;;) {
        const item = await next;
        if (item.done === true) break;
        const message = item.value;
        first ??= message;
        if (message.tokenIds.length > 0) {
          const now = clock.now();
          record.firstTokenAt ??= now;
          if (!firstSeen) {
            firstSeen = true;
            route?.onFirstResponse?.();
          }
          for (const _ of message.tokenIds) record.tokenTimes.push(now);
          record.outputTokens += message.tokenIds.length;
        }
        if (message.finishReason === "error" || message.finishReason === "cancelled") record.failed = true;
        next = iterator.next();
      }
      route?.release?.(record.failed ? FAILED : COMPLETED);
      return first;
    } catch (err) {
      route?.release?.(FAILED);
      throw err;
    } finally {
      outstanding[worker] = (outstanding[worker] as number) - 1;
    }
  };

  const serve = async (spec: LongPromptRequest): Promise<void> => {
    const requestId = `r${nextRequestId++}`;
    const record: RequestRecord = {
      arrivedAt: clock.now(),
      firstTokenAt: undefined,
      tokenTimes: [],
      promptTokens: spec.tokenIds.length,
      outputTokens: 0,
      failed: false,
      outcome: "skipped_no_prefill_workers",
    };
    requests.push(record);
    const request: PreprocessedRequest = {
      model: "sim",
      tokenIds: spec.tokenIds,
      sampling: { seed: nextRequestId },
      stop: { maxTokens: spec.maxTokens, ignoreEos: true },
      eosTokenIds: [],
      output: {},
      annotations: { request_id: requestId },
    };
    /** Counts the request in transit until the engine it goes to next has it (`afterStart`). */
    const leaves: (() => void)[] = [];
    const enterTransit = (): (() => void) => {
      inTransit++;
      let left = false;
      const leave = (): void => {
        if (left) return;
        left = true;
        inTransit--;
      };
      leaves.push(leave);
      return leave;
    };
    const start = enterTransit();
    try {
      const decodeRoute = decodeRouter.pick(decodeInstances, { inFlight, request, exclude: NO_EXCLUSIONS });
      if (decodeRoute === undefined) throw new TdistError("no_instances", "no decode worker");
      const decodeWorker = indexOf.get(decodeRoute.instance.instanceId) as number;
      const routed = decodeRoute.decision as RoutingDecision | undefined;
      const prefillRoute = prefillRouter?.pick(prefillInstances, { inFlight, request, exclude: NO_EXCLUSIONS });
      const prefillId = prefillRoute?.instance.instanceId;
      const decision = decideDisaggregation(
        {
          promptTokens: request.tokenIds.length,
          cachedBlocks: routed?.cachedBlocks ?? 0,
          blockSize: cluster.blockSize,
          prefillWorker:
            prefillId === undefined
              ? undefined
              : { workerId: prefillId, queuedPrefillTokens: queuedPrefill.get(prefillId) ?? 0 },
        },
        cluster.disaggregation,
      );
      if (decision.kind === "local" || prefillRoute === undefined) {
        record.outcome = decision.kind === "local" ? decision.outcome : "local";
        prefillRoute?.release?.(UNUSED);
        await stream(decodeWorker, request, record, decodeRoute, start);
        return;
      }
      record.outcome = "remote";
      const prefillWorker = indexOf.get(prefillRoute.instance.instanceId) as number;
      let answer: EngineOutput | undefined;
      try {
        answer = await stream(
          prefillWorker,
          { ...request, disaggregation: { phase: "prefill" } },
          record,
          prefillRoute,
          start,
        );
      } catch {
        answer = undefined;
      }
      if (answer === undefined || answer.tokenIds.length === 0) {
        // The prefill worker failed before its token: the decode worker serves it aggregated.
        record.outcome = "fallback";
        record.failed = false;
        await stream(decodeWorker, request, record, decodeRoute, enterTransit());
        return;
      }
      if (answer.finishReason !== undefined || answer.kvTransfer === undefined) {
        decodeRoute.release?.(UNUSED);
        return;
      }
      const handedOver = enterTransit();
      transfers.count++;
      transfers.payloadBytes += answer.kvTransfer.byteCount;
      const bytesPerToken = engines[prefillWorker]?.options.kvBytesPerToken ?? 0;
      transfers.simulatedKvBytes += request.tokenIds.length * bytesPerToken;
      transfers.simulatedMs += kvTransferMs(
        request.tokenIds.length,
        bytesPerToken,
        engines[prefillWorker]?.options.kvTransferGbps ?? 0,
      );
      const decodeRequest: PreprocessedRequest = {
        ...request,
        tokenIds: [...request.tokenIds, ...answer.tokenIds],
        stop: { ...request.stop, maxTokens: request.stop.maxTokens - answer.tokenIds.length },
        disaggregation: {
          phase: "decode",
          kvTransfer: answer.kvTransfer,
          kvTokens: request.tokenIds.length,
          prefillWorkerId: prefillRoute.instance.instanceId,
        },
      };
      const decoded = await stream(decodeWorker, decodeRequest, record, decodeRoute, handedOver);
      // The fetch failed and the decode worker prefilled itself: still served, counted as the metric counts it.
      if (decoded?.kvImport === "fallback") record.outcome = "fallback";
    } catch {
      record.failed = true;
    } finally {
      for (const leave of leaves) leave();
    }
  };

  for (const spec of workload) {
    clock.at(spec.arrivalMs, () => {
      void serve(spec);
    });
  }
  const isSettled = (): boolean => {
    if (inTransit > 0) return false;
    for (let i = 0; i < engines.length; i++) {
      const activity = (engines[i] as MockerEngine).activity();
      if (activity.kvTransfers > 0) return false;
      const sleepers = (activity.sequences > 0 ? 1 : 0) + activity.transferWaits;
      if ((clock.sleeps[i] as number) < sleepers) return false;
    }
    return true;
  };
  await clock.run(isSettled);
  for (const record of requests) {
    if (record.firstTokenAt === undefined || record.outputTokens === 0) record.failed = true;
    if (record.outcome === "fallback") outcomes.fallback++;
    else outcomes[record.outcome]++;
  }
  await decodeRouter.close();
  await prefillRouter?.close();
  for (const engine of engines) await engine.close();
  await plane.close();
  await runtime.shutdown();
  const firstArrival = Math.min(...requests.map((r) => r.arrivedAt));
  const lastToken = Math.max(...requests.map((r) => r.tokenTimes.at(-1) ?? r.arrivedAt));
  return {
    topology,
    requests,
    makespanMs: lastToken - firstArrival,
    outcomes,
    transfers,
    perWorker,
    stuckSettles: clock.stuckSettles,
    wallMs: performance.now() - wallStart,
  };
}
