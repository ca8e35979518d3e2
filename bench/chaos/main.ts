/**
 * The chaos suite: a frontend and 4 workers as processes on real etcd and
 * NATS, a c=32 streaming load of long greedy answers, and one disruption per
 * scenario (SIGKILL workers, SIGSTOP one, restart etcd or nats-server, crash
 * an engine child in a loop). Every answer is checked against an undisturbed
 * run's. Prints a table and writes bench/results/chaos.json; exits 1 when a
 * scenario did not hold.
 *
 *   npm run chaos [-- --quick] [--engines mocker,llamacpp] [--only <substring>]
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startEtcd, startNats } from "@tdist/testkit";
import { resultsDirectory } from "../lib/results.js";
import type { ChaosEngine } from "./chaos-cluster.js";
import { baselineScenario, chaosScenarios } from "./chaos-scenarios.js";
import { type ChaosLoadSettings, formatChaosTable, runScenario, type ScenarioResult } from "./run-scenario.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    engines: { type: "string", default: "mocker,llamacpp" },
    only: { type: "string" },
  },
});
const quick = values.quick === true;
const engines = (values.engines ?? "").split(",").filter((e): e is ChaosEngine => e === "mocker" || e === "llamacpp");
if (engines.length === 0) throw new Error(`--engines must name mocker and/or llamacpp, got ${values.engines}`);

/** Per engine: the mocker's simulated GPU is fast, the tiny llama.cpp model shares a few CPU cores among 4 workers. */
const settingsFor = (engine: ChaosEngine): ChaosLoadSettings => ({
  workers: 4,
  concurrency: quick ? 8 : 32,
  maxTokens: engine === "mocker" ? (quick ? 200 : 400) : quick ? 32 : 64,
  requestTimeoutMs: engine === "mocker" ? 60_000 : 120_000,
  startTimeoutMs: engine === "mocker" ? 30_000 : 120_000,
});

const [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
const results: ScenarioResult[] = [];
const runId = Date.now().toString(36);
try {
  const baselines = new Map<ChaosEngine, Map<string, string>>();
  for (const engine of engines) {
    const spec = baselineScenario(engine);
    const { result, answers } = await runScenario(
      spec,
      { etcd, nats },
      settingsFor(engine),
      undefined,
      `${runId}-b-${engine}`,
    );
    results.push(result);
    baselines.set(engine, answers);
    console.log(formatChaosTable([result]).split("\n")[1]);
  }
  const specs = chaosScenarios(engines).filter((s) => values.only === undefined || s.name.includes(values.only));
  for (const [index, spec] of specs.entries()) {
    const { result } = await runScenario(
      spec,
      { etcd, nats },
      settingsFor(spec.engine),
      baselines.get(spec.engine),
      `${runId}-${index}`,
    );
    results.push(result);
    console.log(formatChaosTable([result]).split("\n")[1]);
  }
} finally {
  await Promise.all([etcd.stop(), nats.stop()]);
}

console.log(`\n${formatChaosTable(results)}\n`);
for (const r of results) for (const event of r.events) console.log(`${r.scenario}: ${event}`);
const dir = resultsDirectory({ quick });
mkdirSync(dir, { recursive: true });
const file = join(dir, "chaos.json");
const report = {
  bench: "chaos",
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, node: process.version, cpuModel: cpus()[0]?.model ?? "unknown" },
  config: { quick, engines, settings: Object.fromEntries(engines.map((e) => [e, settingsFor(e)])) },
  results,
};
writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
console.log(`wrote ${file}`);
process.exitCode = results.every((r) => r.passed) ? 0 : 1;
