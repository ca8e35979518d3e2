/**
 * bench/routing: the same offered load routed by each policy over 8 mocker
 * workers in simulated time.
 *
 *   npm run bench -- routing [--quick] [--workload prefix|mooncake] [--load F]
 *
 * Two workloads: (a) `prefix`: many users in multi-turn conversations over
 * a few shared system prompts (each turn resends the whole history); (b)
 * `mooncake`: a Mooncake-style open-loop trace with `hash_ids` (512-token
 * blocks shared through popular roots and multi-turn sessions), generated
 * here from a fixed seed. Every policy is the real router object, fed by the
 * engines' real KV events and load metrics over a memory event plane; the
 * engines are `MockerEngine`s on one discrete-event clock (no sleeping), so a
 * run takes seconds of wall time for minutes of simulated serving.
 *
 * Reported per policy: TTFT p50/p90/p99, ITL p50/p99, output throughput,
 * goodput (requests/s whose TTFT met the SLO), KV hit rate (prompt tokens
 * the engines found cached / prompt tokens) and failed requests, against
 * round-robin in the same run. The full run also repeats round-robin, the
 * peer policies and kv at half and one and a half times the offered load
 * (`load_sweep` in the results' config): how the comparison moves with load.
 * Writes bench/results/routing-prefix.json, routing-mooncake.json and
 * docs/routing-prefix.svg, routing-mooncake.svg; a --quick run writes all four
 * to bench/results/quick/ instead.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { DEFAULT_TIMING_MODEL, stepDurationMs } from "@tdist/engine-mocker";
import { DEFAULT_OVERLAP_WEIGHT, type LlmRouterMode } from "@tdist/llm";
import { type BenchResult, result, resultsDirectory, writeReport } from "../lib/results.js";
import { percentile } from "../lib/stats.js";
import { type ClusterOptions, type SimulationResult, simulate, type Workload } from "./simulation.js";
import { barChartSvg } from "./svg-bar-chart.js";
import {
  MOONCAKE_BLOCK_TOKENS,
  type MooncakeTraceOptions,
  mooncakeTrace,
  type PrefixWorkloadOptions,
  prefixSharingWorkload,
} from "./workloads.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    /** Run only these policies (comma-separated; round-robin always runs as the baseline). */
    only: { type: "string" },
    /** The kv / kv-approx overlap weight. Default: the router's own default. */
    "overlap-weight": { type: "string" },
    /** Run one workload: prefix or mooncake. */
    workload: { type: "string" },
    /** Offered load as a multiple of the standard one (prefix: users; mooncake: session rate and count). */
    load: { type: "string" },
  },
});
const quick = values.quick === true;
const load = values.load === undefined ? 1 : Number(values.load);
if (!(load > 0 && load <= 8)) throw new Error(`--load must be a number in (0, 8], got ${values.load}`);
/** Exploratory runs print only: the files hold the standard configuration. */
const exploratory = values.only !== undefined || values["overlap-weight"] !== undefined || load !== 1;

const POLICIES: LlmRouterMode[] = ["random", "round-robin", "least-loaded", "sglang", "llm-d", "kv", "kv-approx"];
const BASELINE: LlmRouterMode = "round-robin";
/** The load sweep of the full run: these policies at these multiples of the standard load. */
const SWEEP_LOADS = [0.5, 1.5];
const SWEEP_POLICIES: LlmRouterMode[] = ["round-robin", "sglang", "llm-d", "kv"];
const SEED = 20_240_601;
/**
 * The kv policies run with the router's default overlap weight (what a user
 * gets without tuning; see DEFAULT_OVERLAP_WEIGHT in kv-scheduler.ts). The
 * full-size run also measures kv and kv-approx at weight 1, Dynamo's
 * default, and records them as `sensitivity`.
 */
const DEFAULT_KV_OVERLAP_WEIGHT = DEFAULT_OVERLAP_WEIGHT;
const overlapWeight =
  values["overlap-weight"] === undefined ? DEFAULT_KV_OVERLAP_WEIGHT : Number(values["overlap-weight"]);
if (!(overlapWeight >= 0)) throw new Error(`--overlap-weight must be a number >= 0, got ${values["overlap-weight"]}`);
const kvOptions = { overlapWeight };

const cluster: ClusterOptions = {
  workers: 8,
  blockSize: 16,
  engine: { totalKvBlocks: 16_384, maxNumSeqs: 256, maxNumBatchedTokens: 8_192, speedupRatio: 1 },
};

const prefixOptions: PrefixWorkloadOptions = {
  users: 160,
  conversationsPerUser: quick ? 1 : 3,
  startSpreadMs: 10_000,
  systemPrompts: 4,
  systemPromptTokens: 1_500,
  turnsMin: 4,
  turnsMax: 14,
  userTokensMedian: 120,
  outputTokensMedian: 250,
  thinkTimeMs: 3_000,
  seed: SEED,
};

const mooncakeOptions: MooncakeTraceOptions = {
  sessions: quick ? 150 : 450,
  sessionsPerS: 7,
  roots: 40,
  zipf: 1.0,
  rootBlocksMin: 2,
  rootBlocksMax: 12,
  turnsMin: 2,
  turnsMax: 8,
  newBlocksMin: 1,
  newBlocksMax: 2,
  turnGapMs: 2_000,
  outputMedian: 200,
  seed: SEED + 1,
};

/**
 * The TTFT SLO of a workload: twice the time an idle worker takes to
 * prefill its median prompt with nothing cached (fixed by the timing model,
 * not by any policy's result).
 */
function ttftSloMs(medianPromptTokens: number): number {
  let remaining = medianPromptTokens;
  let done = 0;
  let ms = 0;
  while (remaining > 0) {
    const chunk = Math.min(remaining, cluster.engine.maxNumBatchedTokens ?? 8_192);
    done += chunk;
    remaining -= chunk;
    ms += stepDurationMs(DEFAULT_TIMING_MODEL, {
      prefillChunks: [{ newTokens: chunk, contextEnd: done }],
      decodeSequences: 0,
      decodeKvBlocks: 0,
    });
  }
  return Math.round(2 * ms);
}

interface PolicySummary {
  policy: LlmRouterMode;
  ttftP50: number;
  ttftP90: number;
  ttftP99: number;
  itlP50: number;
  itlP99: number;
  throughput: number;
  goodput: number;
  kvHitRate: number;
  failed: number;
  requests: number;
  details: Record<string, unknown>;
}

function summarise(run: SimulationResult, sloMs: number): PolicySummary {
  const ok = run.requests.filter((r) => !r.failed);
  const ttft = ok.map((r) => (r.firstTokenAt as number) - r.arrivedAt);
  const itl: number[] = [];
  for (const r of ok)
    for (let i = 1; i < r.tokenTimes.length; i++)
      itl.push((r.tokenTimes[i] as number) - (r.tokenTimes[i - 1] as number));
  const seconds = run.makespanMs / 1000;
  const outputTokens = ok.reduce((sum, r) => sum + r.outputTokens, 0);
  const promptTokens = run.requests.reduce((sum, r) => sum + r.promptTokens, 0);
  const cachedTokens = run.requests.reduce((sum, r) => sum + r.cachedTokens, 0);
  return {
    policy: run.policy,
    ttftP50: percentile(ttft, 0.5),
    ttftP90: percentile(ttft, 0.9),
    ttftP99: percentile(ttft, 0.99),
    itlP50: percentile(itl, 0.5),
    itlP99: percentile(itl, 0.99),
    throughput: outputTokens / seconds,
    goodput: ttft.filter((t) => t <= sloMs).length / seconds,
    kvHitRate: promptTokens === 0 ? 0 : cachedTokens / promptTokens,
    failed: run.requests.length - ok.length,
    requests: run.requests.length,
    details: {
      requests: run.requests.length,
      simulated_s: Number(seconds.toFixed(1)),
      wall_s: Number((run.wallMs / 1000).toFixed(1)),
      requests_per_worker: run.perWorker,
      stuck_settles: run.stuckSettles,
    },
  };
}

function results(summaries: PolicySummary[]): BenchResult[] {
  const base = summaries.find((s) => s.policy === BASELINE) as PolicySummary;
  const out: BenchResult[] = [];
  const add = (name: string, unit: string, pick: (s: PolicySummary) => number, goal: (s: PolicySummary) => string) => {
    for (const s of summaries) {
      const r = result(name, s.policy, pick(s), unit, BASELINE, pick(base), goal(s));
      // A zero baseline (no failures) has no meaningful ratio: equal zeros read as 1.
      if (pick(base) === 0) r.ratio = pick(s) === 0 ? 1 : Number.POSITIVE_INFINITY;
      out.push(r);
    }
  };
  const lower = (): string => "lower is better";
  add(
    "ttft_p50_ms",
    "ms",
    (s) => s.ttftP50,
    (s) => (s.policy === "kv" ? "<= 0.333 (kv 3x better than round-robin)" : "lower is better"),
  );
  add(
    "ttft_p90_ms",
    "ms",
    (s) => s.ttftP90,
    (s) => (s.policy === "kv" ? "below sglang and llm-d" : "lower is better"),
  );
  add("ttft_p99_ms", "ms", (s) => s.ttftP99, lower);
  add("itl_p50_ms", "ms", (s) => s.itlP50, lower);
  add("itl_p99_ms", "ms", (s) => s.itlP99, lower);
  add(
    "throughput_tokens_per_s",
    "tokens/s",
    (s) => s.throughput,
    (s) => (s.policy === "kv" ? ">= 1.0 (no worse than round-robin)" : "higher is better"),
  );
  add(
    "goodput_req_per_s",
    "req/s",
    (s) => s.goodput,
    () => "higher is better",
  );
  add(
    "kv_hit_rate",
    "fraction",
    (s) => s.kvHitRate,
    () => "higher is better",
  );
  add(
    "failed_requests",
    "requests",
    (s) => s.failed,
    () => "0",
  );
  // Keep more digits than result()'s rounding for the hit rate.
  for (const r of out) {
    if (r.name !== "kv_hit_rate") continue;
    const s = summaries.find((x) => x.policy === r.variant) as PolicySummary;
    r.value = Number(s.kvHitRate.toFixed(4));
    r.baselineValue = Number(base.kvHitRate.toFixed(4));
    r.ratio = Number((s.kvHitRate / base.kvHitRate).toFixed(3));
  }
  return out;
}

function checkGoals(summaries: PolicySummary[]): string[] {
  const by = (p: LlmRouterMode) => summaries.find((s) => s.policy === p) as PolicySummary;
  const kv = by("kv");
  const rr = by("round-robin");
  const lines = [
    `kv TTFT p50 ${kv.ttftP50.toFixed(1)} ms vs round-robin ${rr.ttftP50.toFixed(1)} ms: ${(rr.ttftP50 / kv.ttftP50).toFixed(2)}x better (goal >= 3x) ${rr.ttftP50 / kv.ttftP50 >= 3 ? "MET" : "MISSED"}`,
    `kv TTFT p90 ${kv.ttftP90.toFixed(1)} ms vs sglang ${by("sglang").ttftP90.toFixed(1)} / llm-d ${by("llm-d").ttftP90.toFixed(1)} ms ${kv.ttftP90 < by("sglang").ttftP90 && kv.ttftP90 < by("llm-d").ttftP90 ? "MET" : "MISSED"}`,
    `kv throughput ${kv.throughput.toFixed(0)} vs round-robin ${rr.throughput.toFixed(0)} tokens/s ${kv.throughput >= rr.throughput ? "MET" : "MISSED"}`,
    `failed requests: ${summaries.map((s) => `${s.policy}=${s.failed}`).join(" ")} ${summaries.every((s) => s.failed === 0) ? "MET" : "MISSED"}`,
  ];
  return lines;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

const here = dirname(fileURLToPath(import.meta.url));
const docsDir = join(here, "..", "..", "..", "docs");

interface BuiltWorkload {
  workload: Workload;
  medianPrompt: number;
  workloadConfig: Record<string, unknown>;
}

/** A workload at `loadFactor` times the standard offered load (the same seed, so the same kind of traffic). */
function buildWorkload(name: "prefix" | "mooncake", loadFactor: number): BuiltWorkload {
  let workload: Workload;
  let medianPrompt: number;
  let workloadConfig: Record<string, unknown>;
  if (name === "prefix") {
    const options = { ...prefixOptions, users: Math.round(prefixOptions.users * loadFactor) };
    const users = prefixSharingWorkload(options);
    // Prompt lengths with replies at their planned length give the SLO's median prompt.
    const lengths: number[] = [];
    for (const user of users) {
      let history = 0;
      for (const t of user.turns) {
        if (t.systemPrompt !== undefined) history = t.systemPrompt.length;
        lengths.push(history + t.userTokens.length);
        history += t.userTokens.length + t.maxTokens;
      }
    }
    medianPrompt = percentile(lengths, 0.5);
    workload = { kind: "chat", users };
    workloadConfig = { ...options, requests: lengths.length, median_prompt_tokens: medianPrompt };
  } else {
    // A longer trace at the higher rate: the same simulated duration.
    const options = {
      ...mooncakeOptions,
      sessionsPerS: mooncakeOptions.sessionsPerS * loadFactor,
      sessions: Math.round(mooncakeOptions.sessions * loadFactor),
    };
    const records = mooncakeTrace(options);
    medianPrompt = percentile(
      records.map((r) => r.input_length),
      0.5,
    );
    workload = { kind: "trace", records };
    const ids = new Set(records.flatMap((r) => r.hash_ids));
    workloadConfig = {
      ...options,
      hash_block_tokens: MOONCAKE_BLOCK_TOKENS,
      requests: records.length,
      distinct_hash_ids: ids.size,
      median_prompt_tokens: medianPrompt,
      trace_sample: records.slice(0, 3),
    };
  }
  return { workload, medianPrompt, workloadConfig };
}

/** The load sweep: a few policies at other offered loads, each against round-robin at that load. */
async function loadSweep(name: "prefix" | "mooncake"): Promise<Record<string, unknown>[]> {
  const points: Record<string, unknown>[] = [];
  for (const factor of SWEEP_LOADS) {
    const { workload, medianPrompt, workloadConfig } = buildWorkload(name, factor);
    const sloMs = ttftSloMs(medianPrompt);
    const summaries: PolicySummary[] = [];
    for (const policy of SWEEP_POLICIES)
      summaries.push(summarise(await simulate(policy, workload, cluster, SEED, kvOptions), sloMs));
    const rr = summaries.find((s) => s.policy === BASELINE) as PolicySummary;
    for (const s of summaries) {
      const point = {
        load: factor,
        policy: s.policy,
        requests: s.requests,
        ttft_p50_ms: round(s.ttftP50),
        ttft_p90_ms: round(s.ttftP90),
        ttft_p99_ms: round(s.ttftP99),
        ttft_p50_vs_round_robin: Number((rr.ttftP50 / s.ttftP50).toFixed(2)),
        itl_p50_ms: round(s.itlP50),
        throughput_tokens_per_s: round(s.throughput),
        kv_hit_rate: Number(s.kvHitRate.toFixed(4)),
        failed_requests: s.failed,
      };
      points.push(point);
      console.log(`${name} load x${factor} ${JSON.stringify(point)}`);
    }
    if (name === "prefix") console.log(`${name} load x${factor}: users ${String(workloadConfig.users)}`);
  }
  return points;
}

async function runWorkload(name: "prefix" | "mooncake"): Promise<void> {
  const { workload, medianPrompt, workloadConfig } = buildWorkload(name, load);
  const sloMs = ttftSloMs(medianPrompt);
  const policies = values.only
    ? POLICIES.filter((p) => values.only?.split(",").includes(p) || p === BASELINE)
    : POLICIES;
  const summaries: PolicySummary[] = [];
  for (const policy of policies) {
    const run = await simulate(policy, workload, cluster, SEED, kvOptions);
    const summary = summarise(run, sloMs);
    summaries.push(summary);
    console.log(
      `${name} ${policy.padEnd(12)} ttft p50 ${summary.ttftP50.toFixed(1).padStart(7)} p90 ${summary.ttftP90.toFixed(1).padStart(7)} ms | ` +
        `itl p50 ${summary.itlP50.toFixed(1)} ms | ${summary.throughput.toFixed(0)} tok/s | hit ${(summary.kvHitRate * 100).toFixed(1)}% | ` +
        `failed ${summary.failed} | ${JSON.stringify(summary.details)}`,
    );
  }
  // Sensitivity: the kv policies at Dynamo's default weight 1 (full size only; quick must stay under a minute).
  const sensitivity: Record<string, unknown> = {};
  if (!quick && !exploratory && overlapWeight !== 1) {
    for (const policy of ["kv", "kv-approx"] as const) {
      const s = summarise(await simulate(policy, workload, cluster, SEED, { overlapWeight: 1 }), sloMs);
      sensitivity[`${policy}@overlapWeight=1`] = {
        ttft_p50_ms: round(s.ttftP50),
        ttft_p90_ms: round(s.ttftP90),
        ttft_p99_ms: round(s.ttftP99),
        itl_p50_ms: round(s.itlP50),
        throughput_tokens_per_s: round(s.throughput),
        goodput_req_per_s: round(s.goodput),
        kv_hit_rate: Number(s.kvHitRate.toFixed(4)),
        failed_requests: s.failed,
      };
      console.log(`${name} ${policy}@overlapWeight=1 ${JSON.stringify(sensitivity[`${policy}@overlapWeight=1`])}`);
    }
  }
  const complete = ["kv", "sglang", "llm-d"].every((p) => summaries.some((s) => s.policy === p));
  const goals = complete ? checkGoals(summaries) : ["(partial run: goals not evaluated)"];
  for (const line of goals) console.log(`  ${line}`);
  if (exploratory) {
    console.log(
      `(--only / --overlap-weight / --load: not writing bench/results/routing-${name}.json or docs/routing-${name}.svg)`,
    );
    return;
  }
  const sweep = quick ? [] : await loadSweep(name);
  const sweepPanels = SWEEP_LOADS.filter(() => sweep.length > 0).map((factor) => ({
    title: `TTFT p50 at ${factor}x load`,
    unit: "ms",
    better: "lower" as const,
    bars: sweep
      .filter((p) => p.load === factor)
      .map((p) => ({ label: p.policy as string, value: p.ttft_p50_ms as number })),
  }));
  writeReport(
    `routing-${name}`,
    {
      workload: name,
      quick,
      policies,
      baseline: BASELINE,
      seed: SEED,
      cluster,
      kv_router_options: { temperature: 0, ...kvOptions },
      timing_model: DEFAULT_TIMING_MODEL,
      ttft_slo_ms: sloMs,
      ttft_slo_rule: "2 x idle-worker TTFT of the median prompt with nothing cached",
      throughput_rule: "output tokens of successful requests / (last completion - first arrival)",
      kv_hit_rate_rule: "prompt tokens the engines reported cached / prompt tokens",
      workload_config: workloadConfig,
      per_policy: Object.fromEntries(summaries.map((s) => [s.policy, s.details])),
      goals,
      sensitivity,
      load_sweep: {
        rule: "the same policies and seed at other offered loads (prefix: users; mooncake: session rate and count, same duration)",
        loads: quick ? [] : SWEEP_LOADS,
        points: sweep,
      },
    },
    results(summaries),
    { quick },
  );
  // The committed charts show the full run; a quick run's go beside its scratch results.
  const chartDir = quick ? resultsDirectory({ quick }) : docsDir;
  mkdirSync(chartDir, { recursive: true });
  const svg = barChartSvg(
    `Routing policies, ${name === "prefix" ? "prefix-sharing conversations" : "Mooncake-style trace"}`,
    `8 mocker workers, simulated time, same workload for every policy; ${summaries[0]?.requests ?? 0} requests; kv overlap weight ${overlapWeight}${quick ? " (--quick)" : ""}`,
    [
      {
        title: "TTFT p50",
        unit: "ms",
        better: "lower",
        bars: summaries.map((s) => ({ label: s.policy, value: s.ttftP50 })),
      },
      {
        title: "TTFT p90",
        unit: "ms",
        better: "lower",
        bars: summaries.map((s) => ({ label: s.policy, value: s.ttftP90 })),
      },
      {
        title: "Throughput",
        unit: "output tokens/s",
        better: "higher",
        bars: summaries.map((s) => ({ label: s.policy, value: s.throughput })),
      },
      {
        title: "KV hit rate",
        unit: "% of prompt tokens",
        better: "higher",
        bars: summaries.map((s) => ({ label: s.policy, value: s.kvHitRate * 100 })),
      },
      ...sweepPanels,
    ],
  );
  writeFileSync(join(chartDir, `routing-${name}.svg`), svg);
  console.log(`wrote ${join(chartDir, `routing-${name}.svg`)}`);
}

if (values.workload === undefined || values.workload === "prefix") await runWorkload("prefix");
if (values.workload === undefined || values.workload === "mooncake") await runWorkload("mooncake");
