import { MockerEngine, type MockerEngineOptions } from "@tdist/engine-mocker";
import {
  createRouterPolicy,
  type LlmRouter,
  type LlmRouterMode,
  type PreprocessedRequest,
  type RouterPolicyOptions,
} from "@tdist/llm";
import {
  Context,
  eventSubject,
  type Instance,
  MemoryEventBus,
  MemoryEventPlane,
  type Route,
  type StreamOutcome,
  TdistError,
} from "@tdist/runtime";
import { SimulationClock } from "./simulation-clock.js";
import { type ChatUser, type MooncakeRecord, mooncakePrompt, seededRandom } from "./workloads.js";

export interface ClusterOptions {
  workers: number;
  blockSize: number;
  engine: Omit<MockerEngineOptions, "workerId" | "blockSize" | "clock" | "eventPublisher">;
}

/** What one request did, in simulated ms. */
export interface RequestRecord {
  arrivedAt: number;
  firstTokenAt: number | undefined;
  tokenTimes: number[];
  promptTokens: number;
  cachedTokens: number;
  outputTokens: number;
  failed: boolean;
  /** Index of the worker the policy chose (-1 when none was). */
  worker: number;
}

export interface SimulationResult {
  policy: LlmRouterMode;
  requests: RequestRecord[];
  /** Simulated ms from the first arrival to the last completion. */
  makespanMs: number;
  /** Requests per worker, to see how the policy spread the load. */
  perWorker: number[];
  /** Settle budgets exhausted (an engine held work it could not schedule); 0 in a healthy run. */
  stuckSettles: number;
  wallMs: number;
}

export type Workload = { kind: "chat"; users: ChatUser[] } | { kind: "trace"; records: MooncakeRecord[] };

const NAMESPACE = "sim";
const NO_EXCLUSIONS: ReadonlySet<string> = new Set();
const COMPLETED: StreamOutcome = { status: "completed" };
const SIMULATED_FAILURE: StreamOutcome = {
  status: "failed",
  error: new TdistError("internal", "the simulated request failed"),
};
const COMPONENT = "backend";

/**
 * Runs one policy over one workload: `workers` mocker engines on one
 * simulated clock, their KV events and load metrics on a private memory
 * event plane, and the real router policy (built by `createRouterPolicy`,
 * fed by that plane) picking a worker for every request, in-process.
 */
export async function simulate(
  policy: LlmRouterMode,
  workload: Workload,
  cluster: ClusterOptions,
  seed: number,
  kv: RouterPolicyOptions["kv"] = {},
): Promise<SimulationResult> {
  const wallStart = performance.now();
  const clock = new SimulationClock();
  const plane = new MemoryEventPlane({ bus: new MemoryEventBus(), maxBufferedEvents: 1_000_000 });
  const workerIds = Array.from({ length: cluster.workers }, (_, i) => `worker-${i}`);
  const engines = workerIds.map(
    (workerId, i) =>
      new MockerEngine({
        ...cluster.engine,
        workerId,
        blockSize: cluster.blockSize,
        clock: clock.forEngine(i),
        eventPublisher: {
          publish: (topic, payload) => plane.publish(eventSubject(NAMESPACE, COMPONENT, topic), payload),
        },
      }),
  );
  const instances: Instance[] = workerIds.map((instanceId) => ({
    instanceId,
    namespace: NAMESPACE,
    component: COMPONENT,
    endpoint: "generate",
    transport: { tcp: "127.0.0.1:0" },
    metadata: {},
    registeredAt: 0,
  }));
  const router: LlmRouter = await createRouterPolicy(policy, {
    blockSize: cluster.blockSize,
    eventPlane: plane,
    namespace: NAMESPACE,
    component: COMPONENT,
    clock,
    rng: seededRandom(seed),
    eventHistory: "none",
    modelName: "sim",
    kv,
  });
  for (const id of workerIds) router.registerWorker(id, { kvBlockSize: cluster.blockSize });

  const outstanding = new Array<number>(cluster.workers).fill(0);
  const perWorker = new Array<number>(cluster.workers).fill(0);
  const indexOf = new Map(workerIds.map((id, i) => [id, i]));
  const inFlight = (id: string): number => outstanding[indexOf.get(id) as number] as number;
  const requests: RequestRecord[] = [];
  let unfinished = 0;
  let nextRequestId = 0;

  /** Routes and runs one request; resolves with its output tokens once it ends. */
  const run = async (tokenIds: number[], maxTokens: number): Promise<number[]> => {
    const requestId = `r${nextRequestId++}`;
    const record: RequestRecord = {
      arrivedAt: clock.now(),
      firstTokenAt: undefined,
      tokenTimes: [],
      promptTokens: tokenIds.length,
      cachedTokens: 0,
      outputTokens: 0,
      failed: false,
      worker: -1,
    };
    requests.push(record);
    unfinished++;
    const request: PreprocessedRequest = {
      model: "sim",
      tokenIds,
      sampling: { seed: nextRequestId },
      stop: { maxTokens, ignoreEos: true },
      eosTokenIds: [],
      output: {},
      annotations: { request_id: requestId },
    };
    const output: number[] = [];
    let worker = -1;
    let route: Route | undefined;
    try {
      route = router.pick(instances, { inFlight, request, exclude: NO_EXCLUSIONS });
      if (route === undefined) throw new Error("no worker picked");
      worker = indexOf.get(route.instance.instanceId) as number;
      record.worker = worker;
      outstanding[worker] = (outstanding[worker] as number) + 1;
      perWorker[worker] = (perWorker[worker] as number) + 1;
      const engine = engines[worker] as MockerEngine;
      for await (const message of engine.generate(request, new Context({ requestId }))) {
        if (message.cachedTokens !== undefined) record.cachedTokens = message.cachedTokens;
        if (message.tokenIds.length > 0) {
          const now = clock.now();
          if (record.firstTokenAt === undefined) {
            record.firstTokenAt = now;
            route.onFirstResponse?.();
          }
          for (const token of message.tokenIds) {
            record.tokenTimes.push(now);
            output.push(token);
          }
        }
        if (message.finishReason === "error" || message.finishReason === "cancelled") record.failed = true;
      }
      record.outputTokens = output.length;
      if (output.length === 0) record.failed = true;
    } catch {
      record.failed = true;
    } finally {
      if (worker >= 0) outstanding[worker] = (outstanding[worker] as number) - 1;
      route?.release?.(record.failed ? SIMULATED_FAILURE : COMPLETED);
      unfinished--;
    }
    return output;
  };

  if (workload.kind === "trace") {
    for (const record of workload.records) {
      clock.at(record.timestamp, () => {
        void run(mooncakePrompt(record), record.output_length);
      });
    }
  } else {
    for (const user of workload.users) {
      let history: number[] = [];
      const startTurn = (t: number): void => {
        const turn = user.turns[t] as ChatUser["turns"][number];
        if (turn.systemPrompt !== undefined) history = [...turn.systemPrompt];
        const prompt = [...history, ...turn.userTokens];
        void run(prompt, turn.maxTokens).then((reply) => {
          history = [...prompt, ...reply];
          const next = user.turns[t + 1];
          if (next !== undefined) clock.at(clock.now() + next.delayMs, () => startTurn(t + 1));
        });
      };
      if (user.turns.length > 0) clock.at(user.turns[0]?.delayMs ?? 0, () => startTurn(0));
    }
  }

  const isSettled = (): boolean => {
    for (let i = 0; i < engines.length; i++) if ((outstanding[i] as number) > 0 && !clock.sleeping[i]) return false;
    return true;
  };
  const end = await clock.run(isSettled, () => false);
  const firstArrival = Math.min(...requests.map((r) => r.arrivedAt));
  for (const record of requests) if (record.firstTokenAt === undefined) record.failed = true;
  if (unfinished > 0) {
    // Requests left running when time ran out (a stuck engine): they failed.
    for (const engine of engines) await engine.close();
  }
  await router.close();
  for (const engine of engines) await engine.close();
  await plane.close();
  return {
    policy,
    requests,
    makespanMs: end - firstArrival,
    perWorker,
    stuckSettles: clock.stuckTurns,
    wallMs: performance.now() - wallStart,
  };
}
