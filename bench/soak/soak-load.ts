import { Agent, request } from "node:http";
import { judgeResponse, type SoakRequest } from "./soak-requests.js";

export interface SoakLoadOptions {
  /** The server's origin, `http://host:port`. */
  origin: string;
  /** Requests to send, numbered from `firstIndex`. */
  total: number;
  firstIndex?: number;
  concurrency: number;
  build: (index: number) => SoakRequest;
  /** A request that has not finished in this long counts as an error. */
  requestTimeoutMs: number;
  /** Called after each response is judged, with how many have finished so far. */
  onFinished?: (finished: number) => void;
  /**
   * Request counts at which sending stops, every request in flight finishes,
   * and `onCheckpoint` runs before sending resumes: a quiet moment to measure.
   */
  checkpoints?: number[];
  onCheckpoint?: (finished: number) => Promise<void>;
  signal?: AbortSignal;
}

export interface SoakLoadResult {
  finished: number;
  errors: number;
  /** Up to ten errors, with the request's index, for the report. */
  firstErrors: { index: number; reason: string }[];
  durationsMs: number[];
  /** Wall time of the load, checkpoints excluded. */
  seconds: number;
}

/**
 * A closed loop of `concurrency` clients over one keep-alive agent, sending
 * `total` requests between them and judging every response whole. The
 * agent's sockets are destroyed before it returns, so the server sees every
 * connection close.
 */
export async function runSoakLoad(options: SoakLoadOptions): Promise<SoakLoadResult> {
  const origin = new URL(options.origin);
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const first = options.firstIndex ?? 0;
  const durationsMs: number[] = [];
  const firstErrors: { index: number; reason: string }[] = [];
  let next = 0;
  let finished = 0;
  let errors = 0;
  let inFlight = 0;
  let drained: (() => void) | undefined;
  let pausedMs = 0;
  const checkpoints = [...(options.checkpoints ?? [])].filter((n) => n < options.total).sort((a, b) => a - b);
  let barrier: Promise<void> | undefined;
  const checkpoint = async (): Promise<void> => {
    const pausedAt = performance.now();
    if (inFlight > 0) await new Promise<void>((resolve) => (drained = resolve));
    await options.onCheckpoint?.(finished);
    checkpoints.shift();
    barrier = undefined;
    pausedMs += performance.now() - pausedAt;
  };
  const one = (index: number): Promise<string | undefined> => {
    const soakRequest = options.build(index);
    return new Promise((resolve) => {
      const req = request(
        {
          host: origin.hostname,
          port: origin.port,
          path: soakRequest.path,
          method: "POST",
          agent,
          headers: { "content-type": "application/json", "content-length": Buffer.byteLength(soakRequest.body) },
          signal: options.signal,
        },
        (res) => {
          res.setEncoding("utf8");
          let text = "";
          res.on("data", (chunk: string) => {
            text += chunk;
          });
          res.on("end", () => {
            const verdict = judgeResponse(soakRequest, res.statusCode ?? 0, text);
            resolve(verdict.ok ? undefined : verdict.reason);
          });
          res.on("error", (error) => resolve(`response: ${error.message}`));
        },
      );
      req.setTimeout(options.requestTimeoutMs, () =>
        req.destroy(new Error(`no answer in ${options.requestTimeoutMs} ms`)),
      );
      req.on("error", (error) => resolve(`request: ${error.message}`));
      req.end(soakRequest.body);
    });
  };
  const start = performance.now();
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (next < options.total && options.signal?.aborted !== true) {
        if (checkpoints[0] !== undefined && next >= checkpoints[0]) {
          barrier ??= checkpoint();
          await barrier;
          continue;
        }
        const index = first + next++;
        const sentAt = performance.now();
        inFlight++;
        const failure = await one(index);
        inFlight--;
        durationsMs.push(performance.now() - sentAt);
        finished++;
        if (failure !== undefined) {
          errors++;
          if (firstErrors.length < 10) firstErrors.push({ index, reason: failure });
        }
        options.onFinished?.(finished);
        if (inFlight === 0) drained?.();
      }
    }),
  );
  const seconds = (performance.now() - start - pausedMs) / 1000;
  agent.destroy();
  return { finished, errors, firstErrors, durationsMs, seconds };
}
