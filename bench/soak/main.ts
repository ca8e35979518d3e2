/**
 * bench/soak: 50,000 requests at concurrency 64 (chat and completions, streaming and unary, 32 to 128 tokens each)
 * against `tdist run --engine mocker`, watching the server process for errors, memory growth, event-loop lag and
 * leaked handles or sockets.
 *
 *   npm run bench -- soak [--quick] [--requests N] [--concurrency N] [--speedup X]
 *
 * RSS is the kernel's VmRSS of the server process, read at the 10,000th request and at the last, each time with
 * no request in flight and after a full GC (asked for through the server's inspector, which the benchmark opens
 * on a loopback port), so where the GC's sawtooth happens to be does not decide the comparison. Event-loop lag
 * and active handles come from the server's own `/metrics` (prom-client's default metrics); sockets are the
 * server's socket descriptors in /proc. Handles and sockets "before" are read after a warm-up whose connections
 * have closed, "after" once the soak's connections have closed.
 */
import { setMaxListeners } from "node:events";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type BenchResult, result, writeReport } from "../lib/results.js";
import { percentile } from "../lib/stats.js";
import { collectGarbage } from "./inspector-session.js";
import { openSockets, type ProcessMetrics, rssMb, scrapeProcessMetrics } from "./server-probe.js";
import { runSoakLoad } from "./soak-load.js";
import { MAX_TOKENS, MIN_TOKENS, soakRequest } from "./soak-requests.js";
import { startTdist } from "./tdist-process.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    requests: { type: "string" },
    concurrency: { type: "string" },
    speedup: { type: "string" },
  },
});
const quick = values.quick === true;
const positive = (flag: string, raw: string | undefined, fallback: number): number => {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${flag} must be a positive number, got ${raw}`);
  return value;
};
const requests = Math.floor(positive("requests", values.requests, quick ? 5_000 : 50_000));
const config = {
  requests,
  concurrency: Math.floor(positive("concurrency", values.concurrency, 64)),
  // Fast enough that the frontend, not the simulated GPU, is what the soak exercises.
  speedup: positive("speedup", values.speedup, 500),
  mix: "chat/completions x stream/unary in turn",
  tokensPerAnswer: `${MIN_TOKENS}-${MAX_TOKENS}`,
  // The RSS baseline: past start-up allocation and the first GCs, so growth after it is what accumulates.
  markRequests: Math.min(10_000, Math.floor(requests / 5)),
  warmupRequests: quick ? 200 : 1_000,
  requestTimeoutMs: 30_000,
  handleTolerance: 1,
  eventLoopResolutionMs: 10,
};
const HANDLE_SETTLE_MS = 10_000;
const SCRAPE_TIMEOUT_MS = 10_000;

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const server = await startTdist(
  join(root, "packages/cli/dist/main.js"),
  ["run", "--engine", "mocker", "--speedup", String(config.speedup), "--port", "0", "--host", "127.0.0.1"],
  { timeoutMs: 120_000, inspect: true },
);
const model = "mocker";
const inspectorUrl = server.inspectorUrl;
if (inspectorUrl === undefined) throw new Error("the server printed no inspector address");

/** RSS and heap in use after a full GC, so the GC's sawtooth does not decide the comparison. */
async function quietMemory(): Promise<{ rssMb: number; heapUsedMb: number; rawRssMb: number }> {
  const rawRssMb = rssMb(server.pid);
  const { heapUsedMb } = await collectGarbage(inspectorUrl as string, 60_000);
  return { rssMb: rssMb(server.pid), heapUsedMb, rawRssMb };
}

interface HandleSample {
  handles: number;
  sockets: number;
}
async function handleSample(): Promise<HandleSample> {
  const metrics = await scrapeProcessMetrics(server.origin, SCRAPE_TIMEOUT_MS);
  return { handles: metrics.activeHandles, sockets: openSockets(server.pid) };
}
/** Handles and sockets once closed connections have been noticed: the least of a few reads. */
async function settledBaseline(): Promise<HandleSample> {
  await sleep(1_000);
  const samples: HandleSample[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(await handleSample());
    await sleep(200);
  }
  return {
    handles: Math.min(...samples.map((s) => s.handles)),
    sockets: Math.min(...samples.map((s) => s.sockets)),
  };
}
/** Reads until both are back to `baseline` or `HANDLE_SETTLE_MS` has passed; the last read. */
async function settleTo(baseline: HandleSample): Promise<HandleSample> {
  const deadline = performance.now() + HANDLE_SETTLE_MS;
  let sample = await handleSample();
  while ((sample.handles > baseline.handles || sample.sockets > baseline.sockets) && performance.now() < deadline) {
    await sleep(250);
    sample = await handleSample();
  }
  return sample;
}

try {
  const beforeAnyRequest = await handleSample();
  const warmup = await runSoakLoad({
    origin: server.origin,
    total: config.warmupRequests,
    firstIndex: 10_000_000,
    concurrency: config.concurrency,
    build: (index) => soakRequest(index, model),
    requestTimeoutMs: config.requestTimeoutMs,
  });
  const before = await settledBaseline();

  // An idle window of the server's event-loop histogram (each scrape starts a new one).
  await scrapeProcessMetrics(server.origin, SCRAPE_TIMEOUT_MS);
  await sleep(2_000);
  const idle = await scrapeProcessMetrics(server.origin, SCRAPE_TIMEOUT_MS);

  const rssSeries: { requests: number; seconds: number; rssMb: number }[] = [];
  const windows: Promise<ProcessMetrics & { requests: number }>[] = [];
  const window = (finished: number): Promise<ProcessMetrics & { requests: number }> =>
    scrapeProcessMetrics(server.origin, SCRAPE_TIMEOUT_MS).then((metrics) => ({ ...metrics, requests: finished }));
  const loadStart = performance.now();
  let atMark = { rssMb: Number.NaN, heapUsedMb: Number.NaN, rawRssMb: Number.NaN };
  const sampleEvery = Math.max(1, Math.floor(config.markRequests / 10));
  const deadline = AbortSignal.timeout(quick ? 180_000 : 1_800_000);
  // Every request in flight listens for the deadline.
  setMaxListeners(config.concurrency + 8, deadline);
  const soak = await runSoakLoad({
    origin: server.origin,
    total: config.requests,
    concurrency: config.concurrency,
    build: (index) => soakRequest(index, model),
    requestTimeoutMs: config.requestTimeoutMs,
    signal: deadline,
    checkpoints: [config.markRequests],
    onCheckpoint: async (finished) => {
      windows.push(window(finished));
      await windows.at(-1);
      atMark = await quietMemory();
      // Starts a new lag window, so the GC above is in none.
      await scrapeProcessMetrics(server.origin, SCRAPE_TIMEOUT_MS);
    },
    onFinished: (finished) => {
      if (finished % sampleEvery === 0 || finished === config.requests) {
        rssSeries.push({
          requests: finished,
          seconds: (performance.now() - loadStart) / 1000,
          rssMb: Math.round(rssMb(server.pid) * 10) / 10,
        });
      }
      const windowEnds = finished % config.markRequests === 0 || finished === config.requests;
      if (windowEnds && finished !== config.markRequests) windows.push(window(finished));
    },
  });
  const lagWindows = await Promise.all(windows);
  const atEnd = await quietMemory();
  const after = await settleTo(before);
  const rssSettled = rssMb(server.pid);

  const errors = soak.errors + (config.requests - soak.finished);
  const lagP99 = Math.max(...lagWindows.map((w) => w.eventLoopLagP99Ms));
  const secondsAt = (count: number): number => rssSeries.find((s) => s.requests >= count)?.seconds ?? Number.NaN;
  const firstSeconds = secondsAt(config.markRequests);
  const lastSeconds = secondsAt(config.requests) - secondsAt(config.requests - config.markRequests);
  const firstDurations = soak.durationsMs.slice(0, config.markRequests);
  const lastDurations = soak.durationsMs.slice(-config.markRequests);
  const markLabel = `${config.markRequests / 1000}k`;

  const results: BenchResult[] = [
    result("errors", `c${config.concurrency}`, errors, "requests", "requests", config.requests, "0"),
    result("rss_growth_10k_to_end", "end", atEnd.rssMb, "MB", `at-${markLabel}`, atMark.rssMb, "ratio < 1.10"),
    result(
      "heap_used_mb",
      "end",
      atEnd.heapUsedMb,
      "MB",
      `at-${markLabel}`,
      atMark.heapUsedMb,
      "reported (after a full GC)",
    ),
    result(
      "eventloop_lag_p99_ms",
      "under-load",
      lagP99,
      "ms",
      "idle",
      idle.eventLoopLagP99Ms,
      `reported (includes the ${config.eventLoopResolutionMs} ms sampling interval)`,
    ),
    result(
      "handles_after_vs_before",
      "after",
      after.handles,
      "handles",
      "before",
      before.handles,
      `<= 1.0 (+${config.handleTolerance} handle)`,
    ),
    result(
      "sockets_after_vs_before",
      "after",
      after.sockets,
      "sockets",
      "before",
      before.sockets,
      `<= 1.0 (+${config.handleTolerance} socket)`,
    ),
    result(
      "requests_per_s",
      `last-${markLabel}`,
      config.markRequests / lastSeconds,
      "req/s",
      `first-${markLabel}`,
      config.markRequests / firstSeconds,
      "reported; ratio ~1 (no slowdown)",
    ),
    result(
      "request_duration_p99_ms",
      `last-${markLabel}`,
      percentile(lastDurations, 0.99),
      "ms",
      `first-${markLabel}`,
      percentile(firstDurations, 0.99),
      "reported; ratio ~1 (no slowdown)",
    ),
  ];
  const goals = {
    errors: errors === 0,
    rssGrowth: atEnd.rssMb / atMark.rssMb < 1.1,
    handles: after.handles <= before.handles + config.handleTolerance,
    sockets: after.sockets <= before.sockets + config.handleTolerance,
  };
  writeReport(
    "soak",
    {
      ...config,
      requestsPerSecond: Math.round(soak.finished / soak.seconds),
      loadSeconds: Math.round(soak.seconds * 10) / 10,
      warmupErrors: warmup.errors,
      firstErrors: soak.firstErrors,
      handlesBeforeAnyRequest: beforeAnyRequest,
      handlesBefore: before,
      handlesAfter: after,
      rssSettledMb: Math.round(rssSettled * 10) / 10,
      rssBeforeGcMb: { atMark: Math.round(atMark.rawRssMb * 10) / 10, atEnd: Math.round(atEnd.rawRssMb * 10) / 10 },
      lagWindows: lagWindows.map((w) => ({
        requests: w.requests,
        eventLoopLagP99Ms: Math.round(w.eventLoopLagP99Ms * 100) / 100,
        heapUsedMb: Math.round(w.heapUsedMb * 10) / 10,
        activeHandles: w.activeHandles,
      })),
      rssSeries,
      goals,
    },
    results,
    { quick },
  );
  const missed = Object.entries(goals)
    .filter(([, met]) => !met)
    .map(([name]) => name);
  console.log(missed.length === 0 ? "soak: every goal met" : `soak: goals missed: ${missed.join(", ")}`);
  if (missed.length > 0) process.exitCode = 1;
} finally {
  await server.stop(10_000);
}
