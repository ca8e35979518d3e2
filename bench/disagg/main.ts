/**
 * bench/disagg: aggregated against disaggregated serving on the same 4 mocker workers in simulated time.
 *
 *   npm run bench -- disagg [--quick]
 *
 * A long-prompt workload (mean ISL 3000, OSL 150, Poisson arrivals, half the
 * prompts opening with one of 16 shared 1024-token prefixes) served by
 * `agg` (4 aggregated workers), `1p3d` (1 prefill + 3 decode) and `2p2d`. In
 * front of the workers runs the frontend's flow in-process: the real KV
 * router picks the decode worker, a KV router over the prefill workers picks
 * the prefill worker, and `decideDisaggregation` (the frontend's policy,
 * default thresholds) decides remote or local per request; the prefill
 * workers' KV hand-offs cross the runtime's KV transfer plane (small real
 * payloads) and are charged the mocker's transfer time. Engines are
 * `MockerEngine`s on one discrete-event clock, so minutes of serving take
 * seconds.
 *
 * The standard load is chosen from aggregated runs alone, before any split
 * runs: the highest arrival rate at which aggregated serving still keeps up
 * (its TTFT p90 within the 1 s TTFT SLO; beyond it queues grow without
 * bound), found on a fixed ladder and then bisected to 0.25 req/s (1 req/s
 * with --quick, whose runs are also shorter). That is
 * aggregated serving at the edge of its capacity: stressed, not collapsed.
 * The benchmark then runs all three variants at 0.5x, 1x and 1.5x that load.
 * Reported per variant: TTFT p50/p90, ITL p50/p99, output throughput,
 * goodput (requests/s with TTFT <= 1 s and mean ITL <= 50 ms) and failed
 * requests, against `agg` at the same load. Writes bench/results/disagg.json
 * (a --quick run: bench/results/quick/disagg.json).
 */

import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { DEFAULT_KV_BYTES_PER_TOKEN, DEFAULT_KV_TRANSFER_GBPS, DEFAULT_TIMING_MODEL } from "@tdist/engine-mocker";
import { DEFAULT_DISAGGREGATION } from "@tdist/llm";
import { type BenchResult, result, resultsDirectory, writeReport } from "../lib/results.js";
import { percentile } from "../lib/stats.js";
import { barChartSvg, type ChartPanel } from "../routing/svg-bar-chart.js";
import { type ClusterOptions, type SimulationResult, simulate, type Topology } from "./simulation.js";
import { type LongPromptWorkloadOptions, longPromptWorkload } from "./workload.js";

const { values } = parseArgs({ options: { quick: { type: "boolean", default: false } } });
const quick = values.quick === true;

const SEED = 20_261_204;
const TOPOLOGIES: Topology[] = [
  { name: "agg", prefill: 0, decode: 4 },
  { name: "1p3d", prefill: 1, decode: 3 },
  { name: "2p2d", prefill: 2, decode: 2 },
];
const WORKERS = 4;
const BASELINE = "agg";
const SLO = { ttftMs: 1_000, itlMs: 50 };
/** Total arrival rates (requests/s) tried, in order, to find the standard load. */
const CALIBRATION_LADDER = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40];
/** Bisection steps between the last ladder rate that keeps up and the first that does not. */
const CALIBRATION_BISECTIONS = quick ? 2 : 4;
const LOAD_FACTORS = [0.5, 1, 1.5];

/**
 * An ~8B model on one datacenter GPU per worker, as the timing model is
 * shaped: the mocker's default timing and batch limits, 16384 blocks of 16
 * (262k tokens, 32 GiB at 128 KiB a token), the mocker's default transfer
 * model (64 GB/s, 128 KiB a token).
 */
const cluster: ClusterOptions = {
  blockSize: 16,
  engine: {
    totalKvBlocks: 16_384,
    maxNumSeqs: 256,
    maxNumBatchedTokens: 8_192,
    speedupRatio: 1,
    kvTransferGbps: DEFAULT_KV_TRANSFER_GBPS,
    kvBytesPerToken: DEFAULT_KV_BYTES_PER_TOKEN,
  },
  disaggregation: DEFAULT_DISAGGREGATION,
};

const workloadBase: Omit<LongPromptWorkloadOptions, "ratePerS" | "durationS"> = {
  meanInputTokens: 3_000,
  meanOutputTokens: 150,
  lengthSpread: 0.5,
  sharedPrefixes: 16,
  sharedPrefixTokens: 1_024,
  sharedFraction: 0.5,
  seed: SEED,
};
const DURATION_S = quick ? 20 : 120;

interface Summary {
  variant: string;
  ratePerS: number;
  requests: number;
  ttftP50: number;
  ttftP90: number;
  itlP50: number;
  itlP99: number;
  throughput: number;
  goodput: number;
  attainment: number;
  failed: number;
  details: Record<string, unknown>;
}

function summarise(run: SimulationResult, ratePerS: number): Summary {
  const ok = run.requests.filter((r) => !r.failed);
  const ttft = ok.map((r) => (r.firstTokenAt as number) - r.arrivedAt);
  const itl: number[] = [];
  let good = 0;
  for (const r of ok) {
    for (let i = 1; i < r.tokenTimes.length; i++)
      itl.push((r.tokenTimes[i] as number) - (r.tokenTimes[i - 1] as number));
    const first = r.tokenTimes[0] as number;
    const last = r.tokenTimes.at(-1) as number;
    // The request's mean inter-token latency (TPOT), as goodput SLOs are usually stated.
    const meanItl = r.tokenTimes.length > 1 ? (last - first) / (r.tokenTimes.length - 1) : 0;
    if (first - r.arrivedAt <= SLO.ttftMs && meanItl <= SLO.itlMs) good++;
  }
  const seconds = run.makespanMs / 1000;
  const outputTokens = ok.reduce((sum, r) => sum + r.outputTokens, 0);
  return {
    variant: run.topology.name,
    ratePerS,
    requests: run.requests.length,
    ttftP50: percentile(ttft, 0.5),
    ttftP90: percentile(ttft, 0.9),
    itlP50: percentile(itl, 0.5),
    itlP99: percentile(itl, 0.99),
    throughput: outputTokens / seconds,
    goodput: good / seconds,
    attainment: run.requests.length === 0 ? 0 : good / run.requests.length,
    failed: run.requests.length - ok.length,
    details: {
      requests: run.requests.length,
      simulated_s: Number(seconds.toFixed(1)),
      wall_s: Number((run.wallMs / 1000).toFixed(1)),
      slo_attainment: Number((good / Math.max(1, run.requests.length)).toFixed(4)),
      decisions: run.outcomes,
      transfers: {
        count: run.transfers.count,
        payload_bytes: run.transfers.payloadBytes,
        simulated_kv_gib: Number((run.transfers.simulatedKvBytes / 2 ** 30).toFixed(2)),
        simulated_ms_mean: Number((run.transfers.simulatedMs / Math.max(1, run.transfers.count)).toFixed(2)),
      },
      requests_per_worker: run.perWorker,
      stuck_settles: run.stuckSettles,
    },
  };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

function point(s: Summary): Record<string, unknown> {
  return {
    variant: s.variant,
    rate_req_per_s: s.ratePerS,
    ttft_p50_ms: round(s.ttftP50),
    ttft_p90_ms: round(s.ttftP90),
    itl_p50_ms: round(s.itlP50),
    itl_p99_ms: round(s.itlP99),
    throughput_tokens_per_s: round(s.throughput),
    goodput_req_per_s: round(s.goodput),
    goodput_req_per_s_per_worker: round(s.goodput / WORKERS),
    failed_requests: s.failed,
    ...s.details,
  };
}

async function runAt(topology: Topology, ratePerS: number, durationS: number): Promise<Summary> {
  const workload = longPromptWorkload({ ...workloadBase, ratePerS, durationS });
  const summary = summarise(await simulate(topology, workload, cluster, SEED), ratePerS);
  console.log(
    `${topology.name.padEnd(5)} @ ${String(ratePerS).padStart(5)} req/s: ttft p50 ${summary.ttftP50.toFixed(0).padStart(6)} p90 ${summary.ttftP90.toFixed(0).padStart(6)} ms | ` +
      `itl p50 ${summary.itlP50.toFixed(1)} p99 ${summary.itlP99.toFixed(1)} ms | ${summary.throughput.toFixed(0)} tok/s | ` +
      `goodput ${summary.goodput.toFixed(2)} req/s (${(summary.attainment * 100).toFixed(1)}%) | failed ${summary.failed} | ` +
      `${JSON.stringify(summary.details.decisions)} stuck ${String(summary.details.stuck_settles)} wall ${String(summary.details.wall_s)}s`,
  );
  return summary;
}

// 1. The standard load, from aggregated serving alone.
const agg = TOPOLOGIES[0] as Topology;
const calibration: Record<string, unknown>[] = [];
/** Aggregated serving keeps up at `rate`: its TTFT p90 stays within the TTFT SLO. */
async function keepsUp(rate: number): Promise<boolean> {
  const s = await runAt(agg, rate, DURATION_S);
  const ok = s.ttftP90 <= SLO.ttftMs;
  calibration.push({
    rate_req_per_s: rate,
    ttft_p90_ms: round(s.ttftP90),
    slo_attainment: Number(s.attainment.toFixed(4)),
    keeps_up: ok,
  });
  return ok;
}
let lo: number | undefined;
let hi: number | undefined;
for (const rate of CALIBRATION_LADDER) {
  if (!(await keepsUp(rate))) {
    hi = rate;
    break;
  }
  lo = rate;
}
if (lo === undefined || hi === undefined) {
  throw new Error(`aggregated serving kept up at ${lo === undefined ? "no" : "every"} rate of the ladder: change it`);
}
let keptUp: number = lo;
let fellBehind: number = hi;
for (let step = 0; step < CALIBRATION_BISECTIONS; step++) {
  const mid: number = (keptUp + fellBehind) / 2;
  if (await keepsUp(mid)) keptUp = mid;
  else fellBehind = mid;
}
const standardRate = keptUp;
console.log(
  `standard load: ${standardRate} req/s (the highest rate found at which aggregated TTFT p90 <= ${SLO.ttftMs} ms)`,
);

// 2. Every variant at three loads.
const byLoad = new Map<number, Summary[]>();
for (const factor of LOAD_FACTORS) {
  const rate = round(standardRate * factor);
  const summaries: Summary[] = [];
  for (const topology of TOPOLOGIES) summaries.push(await runAt(topology, rate, DURATION_S));
  byLoad.set(factor, summaries);
}

const standard = byLoad.get(1) as Summary[];
const base = standard.find((s) => s.variant === BASELINE) as Summary;
const splits = standard.filter((s) => s.variant !== BASELINE);
const best = splits.reduce((a, b) => (b.goodput > a.goodput ? b : a));
const everyRun = [...byLoad.values()].flat();
const goals = [
  `best split (${best.variant}) goodput ${best.goodput.toFixed(2)} vs agg ${base.goodput.toFixed(2)} req/s: ${(best.goodput / base.goodput).toFixed(2)}x (goal >= 1.3x) ${best.goodput >= 1.3 * base.goodput ? "MET" : "MISSED"}`,
  `best split (${best.variant}) ITL p99 ${best.itlP99.toFixed(1)} vs agg ${base.itlP99.toFixed(1)} ms: ${(best.itlP99 / base.itlP99).toFixed(2)}x (goal <= 0.5x) ${best.itlP99 <= 0.5 * base.itlP99 ? "MET" : "MISSED"}`,
  `failed requests at every load: ${everyRun.reduce((sum, s) => sum + s.failed, 0)} (goal 0) ${everyRun.every((s) => s.failed === 0) ? "MET" : "MISSED"}`,
];
for (const line of goals) console.log(`  ${line}`);

function results(): BenchResult[] {
  const out: BenchResult[] = [];
  const add = (name: string, unit: string, pick: (s: Summary) => number, goal: (s: Summary) => string): void => {
    for (const s of standard) {
      const r = result(name, s.variant, pick(s), unit, BASELINE, pick(base), goal(s));
      if (pick(base) === 0) r.ratio = pick(s) === 0 ? 1 : Number.POSITIVE_INFINITY;
      out.push(r);
    }
  };
  const isBest = (s: Summary): boolean => s.variant === best.variant;
  add(
    "goodput_req_per_s",
    "req/s",
    (s) => s.goodput,
    (s) => (isBest(s) ? ">= 1.3 (best split vs agg, per worker)" : "higher is better"),
  );
  add(
    "ttft_p50_ms",
    "ms",
    (s) => s.ttftP50,
    () => "lower is better",
  );
  add(
    "ttft_p90_ms",
    "ms",
    (s) => s.ttftP90,
    () => "lower is better",
  );
  add(
    "itl_p50_ms",
    "ms",
    (s) => s.itlP50,
    () => "lower is better",
  );
  add(
    "itl_p99_ms",
    "ms",
    (s) => s.itlP99,
    (s) => (isBest(s) ? "<= 0.5 (best split vs agg)" : "lower is better"),
  );
  add(
    "throughput_tokens_per_s",
    "tokens/s",
    (s) => s.throughput,
    () => "higher is better",
  );
  add(
    "failed_requests",
    "requests",
    (s) => s.failed,
    () => "0",
  );
  return out;
}

writeReport(
  "disagg",
  {
    quick,
    workers: WORKERS,
    variants: TOPOLOGIES,
    baseline: BASELINE,
    seed: SEED,
    cluster,
    timing_model: DEFAULT_TIMING_MODEL,
    slo: {
      ttft_ms: SLO.ttftMs,
      itl_ms: SLO.itlMs,
      rule: "TTFT <= 1 s and the request's mean inter-token latency <= 50 ms",
    },
    goodput_rule: "requests meeting the SLO / (last token - first arrival)",
    throughput_rule: "output tokens of successful requests / (last token - first arrival)",
    prefill_busy_source: "the prefill workers' published load metrics (prefillTokensQueued)",
    workload: { ...workloadBase, duration_s: DURATION_S, arrivals: "Poisson" },
    load: {
      standard_req_per_s: standardRate,
      rule: `the highest rate at which aggregated serving keeps up (TTFT p90 <= ${SLO.ttftMs} ms): the ladder, then ${CALIBRATION_BISECTIONS} bisections; aggregated runs only, before any split run`,
      ladder: CALIBRATION_LADDER,
      calibration,
      factors: LOAD_FACTORS,
    },
    results_at: "the standard load; every load's numbers are in loads",
    loads: LOAD_FACTORS.map((factor) => ({ factor, points: (byLoad.get(factor) as Summary[]).map(point) })),
    goals,
  },
  results(),
  { quick },
);

// The committed chart shows the full run; a quick run's goes beside its scratch results.
const panel = (
  title: string,
  unit: string,
  better: ChartPanel["better"],
  factor: number,
  pick: (s: Summary) => number,
) => ({
  title,
  unit,
  better,
  bars: (byLoad.get(factor) as Summary[]).map((s) => ({ label: s.variant, value: pick(s) })),
});
const chartDir = quick
  ? resultsDirectory({ quick })
  : join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "docs");
const chartFile = join(chartDir, "disagg.svg");
writeFileSync(
  chartFile,
  barChartSvg(
    "Aggregated vs disaggregated serving, long prompts",
    `4 mocker workers, simulated time; ISL 3000, OSL 150; standard load ${standardRate} req/s; SLO TTFT <= 1 s, mean ITL <= 50 ms${quick ? " (--quick)" : ""}`,
    [
      ...LOAD_FACTORS.map((f) => panel(`Goodput at ${f}x load`, "req/s", "higher", f, (s) => s.goodput)),
      panel("ITL p99 at 0.5x load", "ms", "lower", 0.5, (s) => s.itlP99),
      panel("ITL p99 at 1x load", "ms", "lower", 1, (s) => s.itlP99),
      panel("TTFT p90 at 1x load", "ms", "lower", 1, (s) => s.ttftP90),
    ],
  ),
);
console.log(`wrote ${chartFile}`);
