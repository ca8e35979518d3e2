import OpenAI, { APIError } from "openai";

/** How one streamed request ended, as the client saw it. */
export type StreamEnding =
  /** The stream ended with a finish reason and no error. */
  | "completed"
  /** An OpenAI error event inside a 200 stream (the SSE `{ error }` the client throws as an APIError without a status). */
  | "error-event"
  /** An HTTP error status before any stream. */
  | "http-error"
  /** The connection broke, or the stream ended with neither a finish reason nor an error. */
  | "broken"
  /** Nothing finished it within the request deadline. */
  | "timed-out";

export interface StreamRecord {
  index: number;
  prompt: string;
  /** `x-tdist-worker`: the instance the frontend first sent it to. */
  worker: string | undefined;
  ending: StreamEnding;
  /** The error's `code` for error events and HTTP errors. */
  errorCode: string | undefined;
  finishReason: string | undefined;
  text: string;
  /** From the final usage chunk. */
  completionTokens: number | undefined;
  startedAt: number;
  endedAt: number;
}

export interface StreamLoadOptions {
  url: string;
  model: string;
  /** Requests sent in all. */
  requests: number;
  /** Streams open at once. */
  concurrency: number;
  /** Tokens per answer (greedy, `ignore_eos`, so every answer is exactly this long). */
  maxTokens: number;
  /** Bound of one request, start to end. */
  requestTimeoutMs: number;
  /** Called after every content chunk, with the load's state. */
  onChunk?: (state: StreamLoadState) => void;
}

export interface StreamLoadState {
  /** Content chunks received so far, over all streams. */
  chunks: number;
  /** Streams open now, by index, with the worker each went to. */
  open: ReadonlyMap<number, string | undefined>;
  finished: number;
}

/** The prompt of request `index`: distinct per request, so each has its own greedy answer. */
export function chaosPrompt(index: number): string {
  return `chaos request ${index}: tell the long story of worker number ${index * 7919} and the stream that never broke`;
}

type CompletionParams = OpenAI.CompletionCreateParamsStreaming & { ignore_eos: boolean };

/**
 * Streams `requests` greedy completions at `concurrency` through the
 * official client (no retries: every failure the frontend lets through is
 * counted) and records how each ended.
 */
export async function runStreamLoad(options: StreamLoadOptions): Promise<StreamRecord[]> {
  const openai = new OpenAI({
    baseURL: `${options.url}/v1`,
    apiKey: "unused",
    maxRetries: 0,
    // Past the request's own deadline, so a stream nothing ends is counted as timed out.
    timeout: options.requestTimeoutMs + 10_000,
  });
  const records: StreamRecord[] = [];
  const open = new Map<number, string | undefined>();
  const state = { chunks: 0, open, finished: 0 };
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < options.requests) {
      const index = next++;
      open.set(index, undefined);
      const record = await streamOne(openai, options, index, (worker) => {
        open.set(index, worker);
        state.chunks++;
        options.onChunk?.(state);
      });
      open.delete(index);
      state.finished++;
      records.push(record);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.requests) }, lane));
  return records.sort((a, b) => a.index - b.index);
}

async function streamOne(
  openai: OpenAI,
  options: StreamLoadOptions,
  index: number,
  onChunk: (worker: string | undefined) => void,
): Promise<StreamRecord> {
  const prompt = chaosPrompt(index);
  const record: StreamRecord = {
    index,
    prompt,
    worker: undefined,
    ending: "broken",
    errorCode: undefined,
    finishReason: undefined,
    text: "",
    completionTokens: undefined,
    startedAt: Date.now(),
    endedAt: 0,
  };
  const signal = AbortSignal.timeout(options.requestTimeoutMs);
  try {
    const params: CompletionParams = {
      model: options.model,
      prompt,
      max_tokens: options.maxTokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    };
    const { data, response } = await openai.completions.create(params, { signal }).withResponse();
    record.worker = response.headers.get("x-tdist-worker") ?? undefined;
    for await (const chunk of data) {
      const choice = chunk.choices[0];
      if (choice !== undefined) {
        record.text += choice.text;
        record.finishReason = choice.finish_reason ?? record.finishReason;
        onChunk(record.worker);
      }
      if (chunk.usage) record.completionTokens = chunk.usage.completion_tokens;
    }
    record.ending = record.finishReason !== undefined && record.finishReason !== "error" ? "completed" : "broken";
  } catch (err) {
    record.ending = endingOf(err, signal);
    if (err instanceof APIError) record.errorCode = typeof err.code === "string" ? err.code : undefined;
  }
  record.endedAt = Date.now();
  return record;
}

function endingOf(err: unknown, signal: AbortSignal): StreamEnding {
  if (signal.aborted) return "timed-out";
  if (err instanceof APIError && err.status === undefined && err.error !== undefined) return "error-event";
  if (err instanceof APIError && err.status !== undefined) return "http-error";
  return "broken";
}
