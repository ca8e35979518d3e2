import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import { abortPromise, delay, toAbortError } from "./abort.js";

export interface WaitForServerOptions<T> {
  /** What is waited for, as messages name it: "etcd", "NATS". */
  server: string;
  endpoints: readonly string[];
  /** How long to keep trying, from the first attempt. */
  timeoutMs: number;
  /** Cancels the wait (the error is `cancelled`, or the signal's TdistError reason). */
  signal?: AbortSignal | undefined;
  logger: Logger;
  /** One connection attempt; must settle within `remainingMs` (it is abandoned after that anyway). */
  attempt(remainingMs: number): Promise<T>;
  /** Failures retrying cannot fix (bad options, refused credentials): thrown at once. */
  isPermanent?(err: unknown): boolean;
  /** Releases what an attempt produced after the wait gave up on it (a late connection). */
  discard?(value: T): void;
}

const firstBackoffMs = 100;
/** The errors `bounded` raised itself because the time ran out. */
const cutShort = new WeakSet<object>();
const maxBackoffMs = 2_000;

/**
 * Connects to a server the runtime depends on, retrying with backoff until
 * `timeoutMs` has passed: servers are often started after the processes that
 * use them. Logs at warn on attempts 1, 2, 4, 8, ... (a line per phase, not
 * per attempt), and at info when the server answers after having failed.
 * Gives up with `dependency_unavailable`, stating the elapsed time, the
 * endpoints and the last failure's cause.
 */
export async function waitForServer<T>(options: WaitForServerOptions<T>): Promise<T> {
  const { server, signal, logger } = options;
  const where = `${server} at ${options.endpoints.join(", ")}`;
  const startedAt = Date.now();
  const deadline = startedAt + options.timeoutMs;
  let backoffMs = firstBackoffMs;
  let lastError: unknown;
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw toAbortError(signal.reason);
    let value: T;
    try {
      value = await bounded(options, Math.max(1, deadline - Date.now()));
    } catch (err) {
      if (TdistError.is(err, "cancelled") || signal?.aborted || options.isPermanent?.(err)) {
        throw signal?.aborted ? toAbortError(signal.reason) : err;
      }
      // An attempt cut short by the deadline says less than the refusal before it.
      if (!(cutShort.has(err as object) && lastError !== undefined)) lastError = err;
      const elapsedMs = Date.now() - startedAt;
      if (Date.now() >= deadline) {
        throw new TdistError(
          "dependency_unavailable",
          `${where} did not answer within ${seconds(options.timeoutMs)} (waited ${seconds(elapsedMs)}, ` +
            `${attempt} attempt${attempt === 1 ? "" : "s"}): ${causeText(lastError)}`,
          { cause: lastError },
        );
      }
      if ((attempt & (attempt - 1)) === 0) {
        logger.warn(
          { server, endpoints: options.endpoints, attempt, elapsedMs, cause: causeText(err) },
          `waiting for ${where} (attempt ${attempt}, ${seconds(elapsedMs)} of ${seconds(options.timeoutMs)})`,
        );
      }
      await delay(Math.min(backoffMs, deadline - Date.now()), signal);
      backoffMs = Math.min(maxBackoffMs, backoffMs * 2);
      continue;
    }
    if (lastError !== undefined) {
      const elapsedMs = Date.now() - startedAt;
      logger.info(
        { server, endpoints: options.endpoints, attempt, elapsedMs },
        `${where} is up after ${seconds(elapsedMs)} (attempt ${attempt})`,
      );
    }
    return value;
  }
}

/** One attempt, raced against the time left and the signal; a value that arrives too late is discarded. */
async function bounded<T>(options: WaitForServerOptions<T>, remainingMs: number): Promise<T> {
  const pending = options.attempt(remainingMs);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new TdistError("timeout", `no answer within ${Math.round(remainingMs)} ms`);
      cutShort.add(err);
      reject(err);
    }, remainingMs);
  });
  const aborted = options.signal ? abortPromise(options.signal) : undefined;
  try {
    return await Promise.race([pending, timeout, ...(aborted ? [aborted.promise] : [])]);
  } catch (err) {
    pending.then(
      (late) => options.discard?.(late),
      () => {},
    );
    throw err;
  } finally {
    clearTimeout(timer);
    aborted?.dispose();
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * The failure's own words: a cause's text when the message only wraps it
 * ("connection refused" over "connect ECONNREFUSED 127.0.0.1:4222"), the
 * last error grpc-js saw instead of its "No connection established" preamble,
 * and without the empty "Resolution note:" it appends.
 */
export function causeText(err: unknown): string {
  let text = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof Error && cause.message && !text.includes(cause.message)) text = `${text} (${cause.message})`;
  text = text.replace(/\s*Resolution note:\s*$/, "");
  const lastError = /Last error: (?:Error: )?(.+?)\.?$/.exec(text);
  if (lastError?.[1]) text = lastError[1];
  return text.trim();
}
