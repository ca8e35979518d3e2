import { delay, withTimeout } from "@tdist/runtime";
import { childPids, type EtcdServer, type NatsServer } from "@tdist/testkit";
import type { ChaosCluster, ChaosEngine, ChaosRequestPlane, ChaosWorker } from "./chaos-cluster.js";
import type { ChunkGates } from "./chunk-gates.js";
import type { StreamLoadState, StreamRecord } from "./stream-load.js";

/** What a disruption sees: the cluster under load, the servers, the load's progress. */
export interface DisruptionContext {
  cluster: ChaosCluster;
  etcd: EtcdServer;
  nats: NatsServer;
  gates: ChunkGates;
  /** Content chunks the whole load will receive when nothing is lost. */
  expectedChunks: number;
  /** Notes what was done, timestamped, for the report. */
  note: (event: string) => void;
}

/** What the disruption did that the verdict needs. */
export interface DisruptionOutcome {
  /** Streams open on a worker when it was killed: with no migration, exactly these fail. */
  cutStreams: Set<number>;
  /** Workers the disruption took out, for the report. */
  disrupted: number[];
  /** Facts checked during the disruption that the verdict adds to its reasons when false. */
  checks: { what: string; held: boolean }[];
}

export interface ScenarioSpec {
  name: string;
  engine: ChaosEngine;
  requestPlane: ChaosRequestPlane;
  migrationLimit?: number;
  /** What the issue asks of this scenario, in a line. */
  expectation: string;
  /** `all-succeed`: 0 failed and every answer equals the baseline's; `cut-streams-fail`: exactly the cut streams fail, each with an error event. */
  verdict: "all-succeed" | "cut-streams-fail";
  /** One wave (`requests` = concurrency) or more. */
  waves: number;
  extraEnv?: Record<string, string>;
  disrupt?: (context: DisruptionContext) => Promise<DisruptionOutcome>;
}

const none = (): DisruptionOutcome => ({ cutStreams: new Set(), disrupted: [], checks: [] });

/** The worker holding the most open streams, among those not yet disrupted. */
function busiestWorker(cluster: ChaosCluster, state: StreamLoadState, skip: readonly number[]): ChaosWorker {
  const counts = new Map<string, number>();
  for (const worker of state.open.values()) if (worker !== undefined) counts.set(worker, (counts.get(worker) ?? 0) + 1);
  const candidates = cluster.workers.filter((w) => !skip.includes(w.index) && w.process.running);
  candidates.sort((a, b) => (counts.get(b.instanceId) ?? 0) - (counts.get(a.instanceId) ?? 0));
  return candidates[0] as ChaosWorker;
}

function streamsOn(worker: ChaosWorker, state: StreamLoadState): number[] {
  return [...state.open].filter(([, on]) => on === worker.instanceId).map(([index]) => index);
}

/** SIGKILLs the busiest worker at each of `fractions` of the load. */
function killWorkersAt(fractions: readonly number[]) {
  return async (context: DisruptionContext): Promise<DisruptionOutcome> => {
    const outcome = none();
    for (const fraction of fractions) {
      const state = await context.gates.after(Math.ceil(context.expectedChunks * fraction));
      const victim = busiestWorker(context.cluster, state, outcome.disrupted);
      const cut = streamsOn(victim, state);
      for (const index of cut) outcome.cutStreams.add(index);
      outcome.disrupted.push(victim.index);
      await victim.process.kill();
      context.note(`SIGKILL worker-${victim.index} with ${cut.length} open streams (of ${state.open.size})`);
    }
    return outcome;
  };
}

/** SIGSTOPs the busiest worker at a quarter of the load and leaves it hung (the cluster resumes it when stopping). */
async function stopWorker(context: DisruptionContext): Promise<DisruptionOutcome> {
  const outcome = none();
  const state = await context.gates.after(Math.ceil(context.expectedChunks / 4));
  const victim = busiestWorker(context.cluster, state, []);
  const cut = streamsOn(victim, state);
  for (const index of cut) outcome.cutStreams.add(index);
  outcome.disrupted.push(victim.index);
  victim.process.signal("SIGSTOP");
  context.note(`SIGSTOP worker-${victim.index} with ${cut.length} open streams (of ${state.open.size})`);
  return outcome;
}

function restartServerAt(server: "etcd" | "nats") {
  return async (context: DisruptionContext): Promise<DisruptionOutcome> => {
    await context.gates.after(Math.ceil(context.expectedChunks / 4));
    const started = Date.now();
    await (server === "etcd" ? context.etcd : context.nats).restart();
    context.note(`${server} restarted (down ${Date.now() - started} ms, same port and data)`);
    return none();
  };
}

/**
 * Kills the busiest llama.cpp worker's engine child `crashes` times, each
 * time once its replacement is up, then checks that the frontend no longer
 * counts the worker as live (a failed engine must leave routing).
 */
function crashEngineChild(crashes: number) {
  return async (context: DisruptionContext): Promise<DisruptionOutcome> => {
    const outcome = none();
    const state = await context.gates.after(Math.ceil(context.expectedChunks / 10));
    const victim = busiestWorker(context.cluster, state, []);
    outcome.disrupted.push(victim.index);
    const workerPid = victim.process.pid as number;
    let killed = 0;
    let previous: number | undefined;
    for (; killed < crashes; killed++) {
      const child = await withTimeout("engine child", 30_000, undefined, async () => {
        for (;;) {
          const pids = childPids(workerPid).filter((pid) => pid !== previous);
          if (pids.length > 0) return pids[0] as number;
          if (!victim.process.running) return undefined;
          await delay(50);
        }
      }).catch(() => undefined);
      if (child === undefined) break;
      previous = child;
      process.kill(child, "SIGKILL");
    }
    context.note(`SIGKILL worker-${victim.index}'s engine child ${killed} times`);
    const expected = context.cluster.workers.length - 1;
    const left = await withTimeout("failed worker leaves routing", 10_000, undefined, async () => {
      while ((await context.cluster.liveWorkers()) !== expected) await delay(100);
      return true;
    }).catch(() => false);
    outcome.checks.push({ what: `the failed worker left routing (${expected} live workers)`, held: left });
    context.note(left ? "the failed worker left routing" : "the failed worker is still counted live");
    return outcome;
  };
}

/** Every scenario of the full suite, per engine, in run order. */
export function chaosScenarios(engines: readonly ChaosEngine[]): ScenarioSpec[] {
  const specs: ScenarioSpec[] = [];
  for (const engine of engines) {
    specs.push(
      {
        name: `sigkill-two-${engine}`,
        engine,
        requestPlane: "tcp",
        expectation: "SIGKILL one worker, then another: 0 failed, every answer equals the undisturbed run's",
        verdict: "all-succeed",
        waves: 2,
        disrupt: killWorkersAt([0.2, 0.45]),
      },
      {
        name: `sigkill-no-migration-${engine}`,
        engine,
        requestPlane: "tcp",
        migrationLimit: 0,
        expectation: "--migration-limit 0: exactly the killed worker's streams fail, each with an OpenAI error event",
        verdict: "cut-streams-fail",
        waves: 1,
        disrupt: killWorkersAt([0.25]),
      },
    );
  }
  const first = engines[0] as ChaosEngine;
  for (const requestPlane of ["tcp", "nats"] as const) {
    specs.push({
      name: `sigstop-${requestPlane}-${first}`,
      engine: first,
      requestPlane,
      expectation:
        "SIGSTOP a worker: detected by the request plane's heartbeat (TCP) or peer liveness (NATS), its streams migrated, 0 failed",
      verdict: "all-succeed",
      waves: 2,
      disrupt: stopWorker,
    });
  }
  for (const server of ["etcd", "nats"] as const) {
    specs.push({
      name: `restart-${server}-${first}`,
      engine: first,
      requestPlane: "tcp",
      expectation: `restart ${server} under load: 0 failed`,
      verdict: "all-succeed",
      waves: 2,
      disrupt: restartServerAt(server),
    });
  }
  if (engines.includes("llamacpp")) {
    specs.push({
      name: "engine-crash-loop-llamacpp",
      engine: "llamacpp",
      requestPlane: "tcp",
      expectation:
        "an engine child crashing repeatedly: its worker leaves routing (failed), the others serve, 0 failed",
      verdict: "all-succeed",
      waves: 2,
      disrupt: crashEngineChild(6),
    });
  }
  return specs;
}

/** The undisturbed run whose answers every scenario of `engine` is checked against. */
export function baselineScenario(engine: ChaosEngine): ScenarioSpec {
  return {
    name: `baseline-${engine}`,
    engine,
    requestPlane: "tcp",
    expectation: "undisturbed: 0 failed (records each prompt's greedy answer)",
    verdict: "all-succeed",
    waves: 2,
  };
}

/** The records' verdict against the scenario's expectation; `reasons` empty means it passed. */
export function judge(
  spec: ScenarioSpec,
  records: readonly StreamRecord[],
  outcome: DisruptionOutcome,
  baseline: ReadonlyMap<string, string> | undefined,
  maxTokens: number,
): { reasons: string[]; tokensVerified: number; mismatched: number } {
  const reasons: string[] = [];
  let tokensVerified = 0;
  let mismatched = 0;
  for (const record of records) {
    if (record.ending !== "completed") continue;
    const expected = baseline?.get(record.prompt);
    const whole = record.completionTokens === maxTokens;
    if (whole && (expected === undefined || expected === record.text)) tokensVerified += maxTokens;
    else mismatched++;
  }
  const failed = records.filter((r) => r.ending !== "completed");
  if (mismatched > 0) reasons.push(`${mismatched} completed answers differ from the undisturbed run's (or are short)`);
  if (spec.verdict === "all-succeed" && failed.length > 0) {
    const endings = new Map<string, number>();
    for (const r of failed) {
      const key = `${r.ending}${r.errorCode ? `:${r.errorCode}` : ""}`;
      endings.set(key, (endings.get(key) ?? 0) + 1);
    }
    reasons.push(`${failed.length} failed (${[...endings].map(([k, n]) => `${n} ${k}`).join(", ")})`);
  }
  if (spec.verdict === "cut-streams-fail") {
    const failedSet = new Set(failed.map((r) => r.index));
    const unexpected = [...failedSet].filter((i) => !outcome.cutStreams.has(i));
    const survived = [...outcome.cutStreams].filter((i) => !failedSet.has(i));
    if (outcome.cutStreams.size === 0) reasons.push("the killed worker had no open streams");
    if (unexpected.length > 0) reasons.push(`${unexpected.length} streams failed that were not on the killed worker`);
    if (survived.length > 0) reasons.push(`${survived.length} streams on the killed worker did not fail`);
    const notEvents = failed.filter((r) => r.ending !== "error-event");
    if (notEvents.length > 0) reasons.push(`${notEvents.length} failures were not OpenAI error events`);
  }
  for (const check of outcome.checks) if (!check.held) reasons.push(`not held: ${check.what}`);
  return { reasons, tokensVerified, mismatched };
}
