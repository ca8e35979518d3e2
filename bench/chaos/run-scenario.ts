import type { EtcdServer, NatsServer } from "@tdist/testkit";
import { ChaosCluster } from "./chaos-cluster.js";
import { type DisruptionOutcome, judge, type ScenarioSpec } from "./chaos-scenarios.js";
import { ChunkGates } from "./chunk-gates.js";
import { runStreamLoad, type StreamRecord } from "./stream-load.js";

export interface ChaosLoadSettings {
  workers: number;
  concurrency: number;
  maxTokens: number;
  requestTimeoutMs: number;
  startTimeoutMs: number;
}

export interface ScenarioResult {
  scenario: string;
  engine: string;
  requestPlane: string;
  expectation: string;
  sent: number;
  succeeded: number;
  failed: number;
  tokensVerified: number;
  mismatched: number;
  passed: boolean;
  /** Why it did not pass; empty when it did. */
  reasons: string[];
  /** What the disruption did, with milliseconds since the load started. */
  events: string[];
  /** How the failures ended, by ending and error code. */
  failures: Record<string, number>;
  durationMs: number;
  /** Process output tails when it did not pass. */
  outputTails?: Record<string, string>;
}

/**
 * Starts a fresh cluster for `spec`, streams its load while the disruption
 * runs, and judges the records against `baseline` (prompt → answer; when
 * absent this is the baseline run, and its answers are returned).
 */
export async function runScenario(
  spec: ScenarioSpec,
  servers: { etcd: EtcdServer; nats: NatsServer },
  settings: ChaosLoadSettings,
  baseline: ReadonlyMap<string, string> | undefined,
  id: string,
): Promise<{ result: ScenarioResult; answers: Map<string, string> }> {
  const started = Date.now();
  const events: string[] = [];
  const note = (event: string): void => {
    events.push(`+${Date.now() - loadStarted} ms: ${event}`);
  };
  let loadStarted = Date.now();
  const cluster = await ChaosCluster.start({
    ...servers,
    engine: spec.engine,
    workers: settings.workers,
    name: id,
    requestPlane: spec.requestPlane,
    startTimeoutMs: settings.startTimeoutMs,
    ...(spec.migrationLimit === undefined ? {} : { migrationLimit: spec.migrationLimit }),
    ...(spec.extraEnv === undefined ? {} : { extraEnv: spec.extraEnv }),
  });
  let records: StreamRecord[] = [];
  let outcome: DisruptionOutcome = { cutStreams: new Set(), disrupted: [], checks: [] };
  const reasons: string[] = [];
  let tails: Record<string, string> = {};
  try {
    const requests = settings.concurrency * spec.waves;
    const gates = new ChunkGates();
    loadStarted = Date.now();
    const load = runStreamLoad({
      url: cluster.url,
      model: cluster.model,
      requests,
      concurrency: settings.concurrency,
      maxTokens: settings.maxTokens,
      requestTimeoutMs: settings.requestTimeoutMs,
      onChunk: (state) => gates.onChunk(state),
    }).finally(() => gates.loadEnded());
    const disruption = spec.disrupt?.({
      cluster,
      ...servers,
      gates,
      expectedChunks: requests * settings.maxTokens,
      note,
    });
    const [loaded, disrupted] = await Promise.allSettled([load, disruption]);
    if (loaded.status === "rejected") throw loaded.reason;
    records = loaded.value;
    if (disrupted.status === "rejected") reasons.push(`disruption failed: ${String(disrupted.reason)}`);
    else if (disrupted.value !== undefined) outcome = disrupted.value;
  } finally {
    tails = cluster.outputTails();
    await cluster.stop();
  }
  const verdict = judge(spec, records, outcome, baseline, settings.maxTokens);
  reasons.push(...verdict.reasons);
  const failures: Record<string, number> = {};
  for (const r of records) {
    if (r.ending === "completed") continue;
    const key = `${r.ending}${r.errorCode ? `:${r.errorCode}` : ""}`;
    failures[key] = (failures[key] ?? 0) + 1;
  }
  const succeeded = records.filter((r) => r.ending === "completed").length;
  const answers = new Map<string, string>();
  for (const r of records) if (r.ending === "completed") answers.set(r.prompt, r.text);
  const passed = reasons.length === 0;
  return {
    answers,
    result: {
      scenario: spec.name,
      engine: spec.engine,
      requestPlane: spec.requestPlane,
      expectation: spec.expectation,
      sent: records.length,
      succeeded,
      failed: records.length - succeeded,
      tokensVerified: verdict.tokensVerified,
      mismatched: verdict.mismatched,
      passed,
      reasons,
      events,
      failures,
      durationMs: Date.now() - started,
      ...(passed ? {} : { outputTails: tails }),
    },
  };
}

/** The results as a fixed-width table, one row per scenario. */
export function formatChaosTable(results: readonly ScenarioResult[]): string {
  const header = ["scenario", "sent", "succeeded", "failed", "tokens verified", "result"];
  const rows = results.map((r) => [
    r.scenario,
    String(r.sent),
    String(r.succeeded),
    String(r.failed),
    String(r.tokensVerified),
    r.passed ? "pass" : `FAIL: ${r.reasons.join("; ")}`,
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => (i === 5 ? 0 : (row[i] as string).length))),
  );
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 5 ? c : i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)))
      .join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}
