/**
 * bench/frontend: the full HTTP path (OpenAI frontend → router → echo worker
 * → detokenizer → SSE) against a bare node:http SSE server emitting the same
 * token stream, in the same run.
 *
 *   npm run bench -- frontend [--quick]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { builtinModelAssets, loadTokenizer } from "@tdist/llm";
import { type BenchResult, result, writeReport } from "../lib/results.js";
import { holdStreams, runSseLoad, type StreamSample } from "../lib/sse-load.js";
import { percentile } from "../lib/stats.js";

const { values } = parseArgs({ options: { quick: { type: "boolean", default: false } } });
const quick = values.quick === true;
const config = {
  promptTokens: 100,
  durationMs: quick ? 3_000 : 10_000,
  concurrency: [1, 16, 256],
  heldStreams: 1_000,
  engine: "echo (0 ms per token)",
};

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..", "..");

// A prompt of exactly `promptTokens` tokens; the echo engine streams them back.
const assets = builtinModelAssets();
const tokenizer = loadTokenizer({ tokenizerJson: assets.tokenizerJson });
const words = Array.from({ length: 400 }, (_, i) => ["alpha", "beta", "gamma", "delta", "echo"][i % 5]).join(" ");
const promptIds = tokenizer.encode(words).slice(0, config.promptTokens);
const prompt = tokenizer.decode(promptIds);
const tokenTexts = promptIds.map((id) => tokenizer.decode([id]));
const body = JSON.stringify({
  model: "echo",
  prompt,
  stream: true,
  max_tokens: config.promptTokens,
  stream_options: { include_usage: true },
});

async function startChild(args: string[], ready: RegExp): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  const child = spawn(process.execPath, args, {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, TDIST_LOG_LEVEL: "warn" },
  });
  let output = "";
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const found = output.match(ready);
      if (found) resolve(found);
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.once("exit", (code) => reject(new Error(`child exited ${code}: ${output}`)));
  });
  return { child, match };
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

const bare = await startChild([join(here, "bare-server.js"), JSON.stringify(tokenTexts)], /"port":(\d+)/);
const tdist = await startChild(
  [join(root, "packages/cli/dist/main.js"), "run", "--engine", "echo", "--port", "0", "--host", "127.0.0.1"],
  /OpenAI API at (http:\/\/[^\s]+)\/v1/,
);
const bareUrl = `http://127.0.0.1:${bare.match[1]}/v1/completions`;
const tdistUrl = `${tdist.match[1]}/v1/completions`;

function tokensPerSecond(run: { samples: StreamSample[]; seconds: number }): number {
  return run.samples.reduce((sum, s) => sum + s.tokens, 0) / run.seconds;
}

const results: BenchResult[] = [];
let failures = 0;
for (const concurrency of config.concurrency) {
  const load = (url: string) => runSseLoad({ url, body, concurrency, durationMs: config.durationMs });
  await load(bareUrl);
  await load(tdistUrl);
  const bareRun = await load(bareUrl);
  const tdistRun = await load(tdistUrl);
  failures += tdistRun.samples.filter((s) => !s.ok || s.tokens !== config.promptTokens).length;
  results.push(
    result(
      "stream_tokens_per_s",
      `c${concurrency}`,
      tokensPerSecond(tdistRun),
      "tokens/s",
      "bare-http",
      tokensPerSecond(bareRun),
      concurrency === 256 ? ">= 0.5" : "higher is better",
    ),
    result(
      "requests_per_s",
      `c${concurrency}`,
      tdistRun.samples.length / tdistRun.seconds,
      "req/s",
      "bare-http",
      bareRun.samples.length / bareRun.seconds,
      "higher is better",
    ),
  );
  if (concurrency === 1) {
    const ttft = (run: typeof bareRun) =>
      percentile(
        run.samples.map((s) => s.ttftMs),
        0.5,
      );
    const overhead = ttft(tdistRun) - ttft(bareRun);
    results.push(result("ttft_overhead_p50_ms", "c1", overhead, "ms", "bare-http", ttft(bareRun), "< 2 ms (absolute)"));
  }
}

// 1,000 streams held open at once against a frontend whose echo worker paces tokens (20 ms each), so the
// streams stay open while RSS is read (the `tdist run` process also hosts the worker).
const paced = await startChild(
  [
    join(root, "packages/cli/dist/main.js"),
    "run",
    "--engine",
    "echo",
    "--delay-ms",
    "20",
    "--port",
    "0",
    "--host",
    "127.0.0.1",
  ],
  /OpenAI API at (http:\/\/[^\s]+)\/v1/,
);
const pacedUrl = `${paced.match[1]}/v1/completions`;
// As many tokens as the prompt holds (completions default to 16), so the streams stay open while RSS is read.
const longBody = JSON.stringify({
  model: "echo",
  prompt: `${prompt} `.repeat(10),
  max_tokens: 10 * config.promptTokens,
  stream: true,
});
const rssBefore = rssMb(paced.child.pid as number);
let releaseHeld: () => void = () => {};
const released = new Promise<void>((resolve) => {
  releaseHeld = resolve;
});
// RSS is read once every stream has its first event (or after 60 s, whichever comes first).
let allOpened: () => void = () => {};
const opening = new Promise<void>((resolve) => {
  allOpened = resolve;
});
const holding = holdStreams(pacedUrl, longBody, config.heldStreams, released, (count) => {
  if (count >= config.heldStreams) allOpened();
});
const openTimer = setTimeout(allOpened, 60_000);
await opening;
clearTimeout(openTimer);
await new Promise((resolve) => setTimeout(resolve, 1_000));
const rssHeld = rssMb(paced.child.pid as number);
releaseHeld();
const opened = await holding;
results.push(result("rss_mb", "1000-streams", rssHeld, "MB", "idle", rssBefore, "< 500 MB (absolute)"));

writeReport("frontend", { ...config, failedStreams: failures, heldStreamsOpened: opened }, results, { quick });
for (const { child } of [bare, tdist, paced]) {
  child.kill("SIGTERM");
  await new Promise((resolve) => child.once("exit", resolve));
}
