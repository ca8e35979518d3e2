/**
 * bench/llamacpp: tokens/s and time to first token of real inference through
 * the full HTTP stack (a `tdist run --engine llamacpp` child process: OpenAI
 * frontend → router → worker → llama.cpp child process → detokenizer → SSE)
 * against node-llama-cpp called directly in this process, on the same tiny
 * model file with the same threads, context and sequence strategy, in the
 * same run, at 1 and 8 concurrent requests. A second `tdist run` with
 * `--no-kv-events` measures, in the same run, what publishing KV events and
 * load metrics costs.
 *
 * Every request is greedy and makes exactly `tokensPerRequest` tokens
 * (`ignore_eos` over HTTP; the direct side counts them), so both sides do
 * the same work. The order of the phases (direct, HTTP, HTTP without KV
 * events) rotates each round so drift on a shared machine hits all three.
 *
 *   npm run bench -- llamacpp [--quick]
 */
import { Agent } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { defaultThreads, describeGgufModel, ensureTinyModel, readGgufFile } from "@tdist/engine-llamacpp";
import { childPids } from "@tdist/testkit";
import { type BenchResult, result, writeReport } from "../lib/results.js";
import { percentile } from "../lib/stats.js";
import { DirectLlama, type GenerationSample } from "./direct.js";
import { startChild, stopChild, streamCompletion } from "./http-stream.js";
import { cpuSecondsOf, processCpuSeconds } from "./process-cpu.js";

const { values } = parseArgs({ options: { quick: { type: "boolean", default: false } } });
const quick = values.quick === true;

const modelPath = await ensureTinyModel();
const description = describeGgufModel(await readGgufFile(modelPath));
// The engine's defaults (see llamacpp-options.ts and LlamaCppEngine's spawn), spelled out for the direct side.
const engineConfig = {
  threads: defaultThreads(),
  sequences: 8,
  contextSize: Math.min(description.trainedContextLength ?? 4096, 4096),
  batchSize: 512,
  flashAttention: false,
  batching: "SequenceBatching: running decodes together in sequence-id order, alternating with one prompt alone",
};
const config = {
  quick,
  model: description.name,
  modelPath,
  ...engineConfig,
  sampling: "greedy (temperature 0), ignore_eos: every request makes exactly tokensPerRequest tokens",
  tokensPerRequest: quick ? 32 : 128,
  c1RequestsPerRound: quick ? 6 : 16,
  c8RequestsPerClientPerRound: quick ? 2 : 4,
  rounds: quick ? 1 : 3,
  http: "tdist run --engine llamacpp child process, streaming /v1/completions over keep-alive HTTP",
  httpNoKvEvents: "a second tdist run with --no-kv-events: the worker publishes no KV events or load metrics",
  direct: "node-llama-cpp in the bench process, context and sequence pool as llamacpp-worker-process.ts",
  ttft: "HTTP: request sent to first SSE event (client side); direct: call to first token",
  c8Ttft: "informational: at c8 a new request waits for its sequence's old tokens to be erased (a DecodePause)",
  cpu: "CPU ms per generated token (user + system, all threads): direct = this process; HTTP = this process (client) + the tdist run process (frontend, worker) + its llama.cpp child",
};

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..", "..");

type HttpSide = "http" | "http-no-kv-events";
type Side = "direct" | HttpSide;
const SIDES: readonly Side[] = ["direct", "http", "http-no-kv-events"];

/** A `tdist run` child serving the model over HTTP on a free port. */
async function startServer(extraFlags: string[]) {
  const started = await startChild(
    [
      join(root, "packages/cli/dist/main.js"),
      "run",
      "--engine",
      "llamacpp",
      "--model",
      modelPath,
      "--threads",
      String(engineConfig.threads),
      "--sequences",
      String(engineConfig.sequences),
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      ...extraFlags,
    ],
    /OpenAI API at (http:\/\/[^\s]+)\/v1/,
    120_000,
  );
  return {
    child: started.child,
    url: new URL(`${started.match[1]}/v1/completions`),
    agent: new Agent({ keepAlive: true, maxSockets: engineConfig.sequences }),
  };
}

const direct = await DirectLlama.load({ modelPath, ...engineConfig });
const servers: Record<HttpSide, Awaited<ReturnType<typeof startServer>>> = {
  http: await startServer([]),
  "http-no-kv-events": await startServer(["--no-kv-events"]),
};

const topics = ["rivers", "machines", "gardens", "cities", "oceans", "music", "winter", "bridges", "clocks", "forests"];
let promptCounter = 0;
/** Distinct prompts, so no request reuses another's whole prompt from the cache (both sides see the same list). */
function nextPrompts(count: number): string[] {
  return Array.from({ length: count }, () => {
    const n = promptCounter++;
    return `Story ${n}: write a few sentences about ${topics[n % topics.length]} and number ${n * 37}.`;
  });
}

/** CPU seconds, split by process. */
interface CpuSplit {
  bench: number;
  server: number;
  llamaChild: number;
}

function cpuNow(side: Side): CpuSplit {
  const bench = processCpuSeconds(process.pid);
  if (side === "direct") return { bench, server: 0, llamaChild: 0 };
  const server = servers[side].child.pid as number;
  return { bench, server: processCpuSeconds(server), llamaChild: cpuSecondsOf(childPids(server)) };
}

interface PhaseRun {
  samples: GenerationSample[];
  seconds: number;
  promptTokenMismatches: number;
  cpu: CpuSplit;
}

/** `clients` closed-loop clients, each sending its share of `prompts` back to back. */
async function runPhase(side: Side, prompts: readonly string[], clients: number, tokens: number): Promise<PhaseRun> {
  // Tokenized before the clock starts: the direct side gets token ids, as the engine does.
  const queue = prompts.map((text) => ({ text, tokenIds: direct.tokenize(text) }));
  const samples: GenerationSample[] = [];
  let promptTokenMismatches = 0;
  const cpuBefore = cpuNow(side);
  const start = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let prompt = queue.shift(); prompt !== undefined; prompt = queue.shift()) {
        if (side === "direct") {
          samples.push(await direct.generate(prompt.tokenIds, tokens));
        } else {
          const { url, agent } = servers[side];
          const sample = await streamCompletion(url, agent, {
            model: description.name,
            prompt: prompt.text,
            max_tokens: tokens,
            temperature: 0,
            ignore_eos: true,
          });
          // The frontend's token ids must equal llama.cpp's, or the two sides evaluate different prompts.
          if (sample.promptTokens !== prompt.tokenIds.length) promptTokenMismatches++;
          samples.push({ ...sample, ok: sample.ok && sample.tokens === tokens });
        }
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const cpuAfter = cpuNow(side);
  const cpu = {
    bench: cpuAfter.bench - cpuBefore.bench,
    server: cpuAfter.server - cpuBefore.server,
    llamaChild: cpuAfter.llamaChild - cpuBefore.llamaChild,
  };
  return { samples, seconds, promptTokenMismatches, cpu };
}

interface Totals {
  tokens: number;
  seconds: number;
  ttftMs: number[];
  failed: number;
  promptTokenMismatches: number;
  cpu: CpuSplit;
}

const emptyTotals = (): Totals => ({
  tokens: 0,
  seconds: 0,
  ttftMs: [],
  failed: 0,
  promptTokenMismatches: 0,
  cpu: { bench: 0, server: 0, llamaChild: 0 },
});

function add(totals: Totals, run: PhaseRun): void {
  totals.tokens += run.samples.reduce((sum, s) => sum + s.tokens, 0);
  totals.seconds += run.seconds;
  totals.ttftMs.push(...run.samples.map((s) => s.ttftMs));
  totals.failed += run.samples.filter((s) => !s.ok).length;
  totals.promptTokenMismatches += run.promptTokenMismatches;
  totals.cpu.bench += run.cpu.bench;
  totals.cpu.server += run.cpu.server;
  totals.cpu.llamaChild += run.cpu.llamaChild;
}

const concurrencies = [1, 8] as const;
const totals = new Map<string, Totals>();
for (const c of concurrencies) for (const side of SIDES) totals.set(`${side}-c${c}`, emptyTotals());

// Warm-up: every side, every sequence, not recorded.
const warmup = nextPrompts(2 * engineConfig.sequences);
for (const side of SIDES) await runPhase(side, warmup, engineConfig.sequences, 8);

for (let round = 0; round < config.rounds; round++) {
  for (const c of concurrencies) {
    const count = c === 1 ? config.c1RequestsPerRound : c * config.c8RequestsPerClientPerRound;
    const prompts = nextPrompts(count);
    // Rotate which side goes first, so none always runs right after another.
    const order = SIDES.map((_, i) => SIDES[(i + round) % SIDES.length] as Side);
    for (const side of order) {
      add(totals.get(`${side}-c${c}`) as Totals, await runPhase(side, prompts, c, config.tokensPerRequest));
    }
  }
}

const get = (key: string): Totals => totals.get(key) as Totals;
const tokensPerSecond = (t: Totals): number => t.tokens / t.seconds;
const ttftP50 = (t: Totals): number => percentile(t.ttftMs, 0.5);

const results: BenchResult[] = [];
for (const c of concurrencies) {
  const http = get(`http-c${c}`);
  const base = get(`direct-c${c}`);
  results.push(
    result("tokens_per_s", `c${c}`, tokensPerSecond(http), "tokens/s", "direct", tokensPerSecond(base), ">= 0.95"),
  );
}
// What the KV events and load metrics cost: the same server with and without them, in the same run.
for (const c of concurrencies) {
  const on = get(`http-c${c}`);
  const off = get(`http-no-kv-events-c${c}`);
  results.push(
    result(
      "kv_events_tokens_per_s",
      `c${c}`,
      tokensPerSecond(on),
      "tokens/s",
      "no-kv-events",
      tokensPerSecond(off),
      "informational (1.0: no cost)",
    ),
  );
}
for (const c of concurrencies) {
  const http = get(`http-c${c}`);
  const base = get(`direct-c${c}`);
  results.push(
    result(
      "ttft_overhead_p50_ms",
      `c${c}`,
      ttftP50(http) - ttftP50(base),
      "ms",
      "direct",
      ttftP50(base),
      c === 1 ? "< 5 ms (absolute)" : "informational",
    ),
  );
}

const perToken = (cpuSeconds: number, t: Totals): number => Math.round((cpuSeconds * 1e6) / t.tokens) / 1000;
const summary = Object.fromEntries(
  [...totals].map(([key, t]) => [
    key,
    {
      requests: t.ttftMs.length,
      tokens: t.tokens,
      seconds: Math.round(t.seconds * 1000) / 1000,
      tokensPerSecond: Math.round(tokensPerSecond(t)),
      ttftP50Ms: Math.round(ttftP50(t) * 100) / 100,
      ttftP90Ms: Math.round(percentile(t.ttftMs, 0.9) * 100) / 100,
      failed: t.failed,
      cpuMsPerToken: perToken(t.cpu.bench + t.cpu.server + t.cpu.llamaChild, t),
      ...(key.startsWith("http")
        ? {
            cpuMsPerTokenSplit: {
              client: perToken(t.cpu.bench, t),
              server: perToken(t.cpu.server, t),
              llamaChild: perToken(t.cpu.llamaChild, t),
            },
            promptTokenMismatches: t.promptTokenMismatches,
          }
        : {}),
    },
  ]),
);
writeReport("llamacpp", { ...config, measured: summary }, results, { quick });

for (const server of Object.values(servers)) {
  server.agent.destroy();
  await stopChild(server.child);
}
await direct.dispose();
const failed = [...totals.values()].reduce((sum, t) => sum + t.failed + t.promptTokenMismatches, 0);
if (failed > 0) {
  console.error(`${failed} request(s) failed, made the wrong number of tokens, or tokenized differently`);
  process.exitCode = 1;
}
