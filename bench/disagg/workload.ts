import { mulberry32 } from "@tdist/runtime";

/** One request of the long-prompt workload. */
export interface LongPromptRequest {
  /** Simulated ms after the start. */
  arrivalMs: number;
  tokenIds: number[];
  maxTokens: number;
  /** Leading tokens shared with other requests (a common document or system prompt). */
  sharedPrefixTokens: number;
}

export interface LongPromptWorkloadOptions {
  /** Poisson arrivals at this mean rate, requests per second. */
  ratePerS: number;
  /** Arrivals stop after this many simulated seconds. */
  durationS: number;
  /** Prompt lengths are uniform in mean x [1 - spread, 1 + spread]. */
  meanInputTokens: number;
  meanOutputTokens: number;
  lengthSpread: number;
  /** Shared prefixes (documents, system prompts), each `sharedPrefixTokens` long. */
  sharedPrefixes: number;
  sharedPrefixTokens: number;
  /** Fraction of requests that start with one of the shared prefixes (chosen uniformly). */
  sharedFraction: number;
  seed: number;
}

/** Distinct token ids per (stream, position), so unrelated prompts never share a block by accident. */
function tokenRun(stream: number, length: number): number[] {
  return Array.from({ length }, (_, i) => ((stream * 7919 + i * 104_729) % 2_000_000_000) + 1);
}

function uniformAround(rand: () => number, mean: number, spread: number): number {
  return Math.max(1, Math.round(mean * (1 - spread + 2 * spread * rand())));
}

/**
 * Long prompts with some prefix sharing, Poisson arrivals: the workload
 * disaggregation is for. Deterministic for a seed; a higher rate with the
 * same seed and duration is the same kind of traffic, only denser.
 */
export function longPromptWorkload(options: LongPromptWorkloadOptions): LongPromptRequest[] {
  const rand = mulberry32(options.seed);
  const prefixes = Array.from({ length: options.sharedPrefixes }, (_, p) =>
    tokenRun(1_000_000 + p, options.sharedPrefixTokens),
  );
  const requests: LongPromptRequest[] = [];
  let at = 0;
  for (let stream = 0; ; stream++) {
    at += (-Math.log(1 - rand()) / options.ratePerS) * 1000;
    if (at > options.durationS * 1000) break;
    const inputTokens = uniformAround(rand, options.meanInputTokens, options.lengthSpread);
    const maxTokens = uniformAround(rand, options.meanOutputTokens, options.lengthSpread);
    const shared = rand() < options.sharedFraction && prefixes.length > 0;
    const prefix = shared ? (prefixes[Math.floor(rand() * prefixes.length)] as number[]) : [];
    const head = prefix.slice(0, Math.max(0, inputTokens - 1));
    requests.push({
      arrivalMs: at,
      tokenIds: [...head, ...tokenRun(stream, inputTokens - head.length)],
      maxTokens,
      sharedPrefixTokens: head.length,
    });
  }
  return requests;
}
