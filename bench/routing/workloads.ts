/**
 * The two offered loads of the routing benchmark, generated from fixed seeds
 * so every policy sees exactly the same requests at the same times.
 */
import { mulberry32 } from "@tdist/runtime";

/** A deterministic PRNG (mulberry32), so every policy sees the same workload. */
export const seededRandom = mulberry32;

function exponential(rand: () => number, mean: number): number {
  return -mean * Math.log(1 - rand());
}

function lognormal(rand: () => number, median: number, sigma: number): number {
  // Box-Muller.
  const z = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return median * Math.exp(sigma * z);
}

/** Distinct token ids per (stream, position): different streams never share a block by accident. */
function tokenRun(stream: number, length: number, offset = 0): number[] {
  const out = new Array<number>(length);
  for (let i = 0; i < length; i++) {
    const x = Math.imul((stream + 1) * 0x9e3779b1 + (offset + i) * 0x85ebca6b, 0xc2b2ae35) >>> 0;
    out[i] = x % 150_000;
  }
  return out;
}

// ---- (a) prefix sharing: multi-turn conversations over a few system prompts -----

export interface ChatTurn {
  /** Before the user's first turn: its start offset; after: think time since the previous reply ended (ms). */
  delayMs: number;
  /** Set on a conversation's first turn: the history restarts from this system prompt. */
  systemPrompt?: number[];
  /** Tokens the user adds (appended after the history). */
  userTokens: number[];
  maxTokens: number;
}

export interface ChatUser {
  id: number;
  turns: ChatTurn[];
}

export interface PrefixWorkloadOptions {
  /** Concurrent users: the load stays the same however long the run is. */
  users: number;
  /** Conversations each user has, one after the other (sets the run's length). */
  conversationsPerUser: number;
  /** Users start spread uniformly over this window (ms). */
  startSpreadMs: number;
  systemPrompts: number;
  systemPromptTokens: number;
  turnsMin: number;
  turnsMax: number;
  /** Median tokens per user message. */
  userTokensMedian: number;
  /** Median output tokens. */
  outputTokensMedian: number;
  /** Mean think time between a reply and the user's next turn (ms; exponential). */
  thinkTimeMs: number;
  seed: number;
}

/**
 * Many users in multi-turn conversations over a few shared system prompts:
 * each turn's prompt is the conversation's system prompt, its whole history
 * (previous user messages and the model's actual replies) and the new user
 * message. Users are closed-loop, as chat users are: the next turn comes a
 * think time after the previous reply ended, and a user who finishes a
 * conversation starts another. A fixed population of users keeps the load
 * steady, so a longer run (more conversations per user) measures the same
 * regime for longer. Messages, reply lengths and think times are fixed by
 * the seed: every policy serves the same users; only how long they wait for
 * replies differs.
 */
export function prefixSharingWorkload(options: PrefixWorkloadOptions): ChatUser[] {
  const rand = seededRandom(options.seed);
  const systemPrompts = Array.from({ length: options.systemPrompts }, (_, s) =>
    tokenRun(1_000_000 + s, options.systemPromptTokens),
  );
  let stream = 0;
  const users: ChatUser[] = [];
  for (let u = 0; u < options.users; u++) {
    const turns: ChatTurn[] = [];
    for (let c = 0; c < options.conversationsPerUser; c++) {
      const systemPrompt = systemPrompts[Math.floor(rand() * systemPrompts.length)] as number[];
      const turnCount = options.turnsMin + Math.floor(rand() * (options.turnsMax - options.turnsMin + 1));
      for (let t = 0; t < turnCount; t++) {
        const userLength = Math.max(16, Math.round(lognormal(rand, options.userTokensMedian, 0.5)));
        const first = turns.length === 0;
        turns.push({
          delayMs: first ? rand() * options.startSpreadMs : exponential(rand, options.thinkTimeMs),
          ...(t === 0 ? { systemPrompt } : {}),
          userTokens: tokenRun(stream++, userLength),
          maxTokens: Math.max(8, Math.min(1024, Math.round(lognormal(rand, options.outputTokensMedian, 0.4)))),
        });
      }
    }
    users.push({ id: u, turns });
  }
  return users;
}

// ---- (b) Mooncake-style trace with hash_ids ------------------------------------------

/** One record, as in Mooncake's published traces (hash_ids name 512-token blocks). */
export interface MooncakeRecord {
  timestamp: number;
  input_length: number;
  output_length: number;
  hash_ids: number[];
}

export interface MooncakeTraceOptions {
  sessions: number;
  /** Sessions start as a Poisson process at this rate (per simulated second). */
  sessionsPerS: number;
  /** Shared prefixes (system prompts, documents, tool specs) and their Zipf exponent. */
  roots: number;
  zipf: number;
  rootBlocksMin: number;
  rootBlocksMax: number;
  turnsMin: number;
  turnsMax: number;
  /** New hash blocks per turn. */
  newBlocksMin: number;
  newBlocksMax: number;
  /** Mean gap between a session's turns (simulated ms; open loop). */
  turnGapMs: number;
  outputMedian: number;
  seed: number;
}

export const MOONCAKE_BLOCK_TOKENS = 512;

/**
 * A trace shaped like Mooncake's: requests carry `hash_ids` (one id per 512
 * prompt tokens), prefixes are shared through popular roots (Zipf) and
 * through multi-turn sessions that extend their previous request's ids; the
 * last block may be partial (`input_length` is not a multiple of 512).
 * Open loop: timestamps are fixed in advance.
 */
export function mooncakeTrace(options: MooncakeTraceOptions): MooncakeRecord[] {
  const rand = seededRandom(options.seed);
  let nextHashId = 0;
  const roots = Array.from({ length: options.roots }, () => {
    const blocks = options.rootBlocksMin + Math.floor(rand() * (options.rootBlocksMax - options.rootBlocksMin + 1));
    return Array.from({ length: blocks }, () => nextHashId++);
  });
  const weights = roots.map((_, i) => 1 / (i + 1) ** options.zipf);
  const totalWeight = weights.reduce((a, b) => a + b, 0);
  const pickRoot = (): number[] => {
    let draw = rand() * totalWeight;
    for (let i = 0; i < roots.length; i++) {
      draw -= weights[i] as number;
      if (draw < 0) return roots[i] as number[];
    }
    return roots.at(-1) as number[];
  };
  const records: MooncakeRecord[] = [];
  let start = 0;
  for (let s = 0; s < options.sessions; s++) {
    start += exponential(rand, 1000 / options.sessionsPerS);
    const turns = options.turnsMin + Math.floor(rand() * (options.turnsMax - options.turnsMin + 1));
    let ids = [...pickRoot()];
    let at = start;
    for (let t = 0; t < turns; t++) {
      const added = options.newBlocksMin + Math.floor(rand() * (options.newBlocksMax - options.newBlocksMin + 1));
      ids = [...ids, ...Array.from({ length: added }, () => nextHashId++)];
      const partial = Math.floor(rand() * MOONCAKE_BLOCK_TOKENS);
      records.push({
        timestamp: Math.round(at),
        input_length: ids.length * MOONCAKE_BLOCK_TOKENS - partial,
        output_length: Math.max(8, Math.min(1024, Math.round(lognormal(rand, options.outputMedian, 0.6)))),
        hash_ids: ids,
      });
      at += exponential(rand, options.turnGapMs);
    }
  }
  return records.sort((a, b) => a.timestamp - b.timestamp);
}

/** The prompt of a trace record: each hash id expands to its own 512 tokens; the last block is cut to length. */
export function mooncakePrompt(record: MooncakeRecord): number[] {
  const tokens: number[] = [];
  for (const id of record.hash_ids) tokens.push(...tokenRun(id, MOONCAKE_BLOCK_TOKENS));
  return tokens.slice(0, record.input_length);
}
