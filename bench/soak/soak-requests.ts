/** One request of the soak's mix: OpenAI chat or completions, streaming or unary. */
export interface SoakRequest {
  path: "/v1/chat/completions" | "/v1/completions";
  stream: boolean;
  /** The mocker ends by length only, so every answer is exactly this long. */
  maxTokens: number;
  body: string;
}

export const MIN_TOKENS = 32;
export const MAX_TOKENS = 128;

// A shared opening, as a system prompt would be, then words that differ per request, so the
// mocker's prefix cache sees both hits and misses.
const SYSTEM = "You are a terse assistant. Answer in plain words and stop when the answer is done.";
const WORDS = ["river", "stone", "cloud", "ember", "field", "glass", "orbit", "maple", "quartz", "tide"];

/** mulberry32 over the request's index: the same index gives the same request on every run. */
function draw(index: number, salt: number): number {
  let t = (Math.imul(index, 0x9e3779b1) + salt) >>> 0;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
}

/** The `index`-th request: the four kinds in turn, 32 to 128 tokens long, prompts of 8 to 40 words. */
export function soakRequest(index: number, model: string): SoakRequest {
  const kind = index % 4;
  const chat = kind < 2;
  const stream = kind % 2 === 0;
  const maxTokens = MIN_TOKENS + Math.floor(draw(index, 1) * (MAX_TOKENS - MIN_TOKENS + 1));
  const wordCount = 8 + Math.floor(draw(index, 2) * 33);
  const words = Array.from({ length: wordCount }, (_, i) => WORDS[Math.floor(draw(index, 3 + i) * WORDS.length)]);
  const question = `Request ${index}: ${words.join(" ")}?`;
  const common = {
    model,
    max_tokens: maxTokens,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  };
  const body = chat
    ? {
        ...common,
        messages: [
          { role: "system", content: SYSTEM },
          { role: "user", content: question },
        ],
      }
    : { ...common, prompt: `${SYSTEM}\n${question}` };
  return { path: chat ? "/v1/chat/completions" : "/v1/completions", stream, maxTokens, body: JSON.stringify(body) };
}

/** What a response was judged: `ok`, or the first thing wrong with it. */
export type SoakVerdict = { ok: true } | { ok: false; reason: string };

interface Usage {
  completion_tokens?: number;
}
interface Choice {
  finish_reason?: string | null;
}
interface Chunk {
  choices?: Choice[];
  usage?: Usage | null;
  error?: unknown;
}

/**
 * Whether a finished response is a whole answer: status 200, a finish
 * reason, and usage counting exactly `maxTokens` tokens; a stream must also
 * end with `[DONE]` and carry no error event.
 */
export function judgeResponse(request: SoakRequest, status: number, text: string): SoakVerdict {
  if (status !== 200) return { ok: false, reason: `status ${status}` };
  const chunks: Chunk[] = [];
  if (request.stream) {
    const events = text
      .split("\n\n")
      .map((event) => event.trim())
      .filter((event) => event !== "");
    if (events.at(-1) !== "data: [DONE]") return { ok: false, reason: "stream did not end with [DONE]" };
    for (const event of events.slice(0, -1)) {
      if (!event.startsWith("data: ")) return { ok: false, reason: "event without data" };
      const chunk = parse(event.slice("data: ".length));
      if (chunk === undefined) return { ok: false, reason: "event is not JSON" };
      chunks.push(chunk);
    }
  } else {
    const chunk = parse(text);
    if (chunk === undefined) return { ok: false, reason: "body is not JSON" };
    chunks.push(chunk);
  }
  if (chunks.some((chunk) => chunk.error !== undefined)) return { ok: false, reason: "error event" };
  const finished = chunks.some((chunk) => chunk.choices?.some((choice) => typeof choice.finish_reason === "string"));
  if (!finished) return { ok: false, reason: "no finish reason" };
  const tokens = chunks.findLast((chunk) => chunk.usage)?.usage?.completion_tokens;
  if (tokens !== request.maxTokens) return { ok: false, reason: `usage ${tokens} tokens, asked ${request.maxTokens}` };
  return { ok: true };
}

function parse(text: string): Chunk | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null ? (value as Chunk) : undefined;
  } catch {
    return undefined;
  }
}
