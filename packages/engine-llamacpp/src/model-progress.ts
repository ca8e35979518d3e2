import type { Logger } from "@tdist/runtime";

/** How far a model file has got: the built-in model being generated, or a remote model being downloaded. */
export interface ModelProgress {
  /** `generate`: the built-in model written into the cache on first use; `download`: a `hf:` or URL model. */
  phase: "generate" | "download";
  /** The cache path being generated, or the reference being downloaded. */
  model: string;
  bytes: number;
  /** Undefined when a server does not say how large the file is. */
  totalBytes: number | undefined;
}

export type ModelProgressListener = (progress: ModelProgress) => void;

export interface LogModelProgressOptions {
  /** Least time between two lines, except the last. Default 2000 ms. */
  intervalMs?: number;
  /** Clock, ms. Default `performance.now`. */
  now?: () => number;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * A listener that logs progress at info: the first event, then at most one
 * line per `intervalMs`, and the last (complete) one, each with bytes,
 * percent and the average rate, e.g. `downloading hf:x/y/z.gguf: 12.3 MB of
 * 57.0 MB (21%), 8.1 MB/s`. What the engine uses when no listener is given.
 */
export function logModelProgress(logger: Logger, options: LogModelProgressOptions = {}): ModelProgressListener {
  const intervalMs = options.intervalMs ?? 2_000;
  const now = options.now ?? (() => performance.now());
  let startedAt: number | undefined;
  let loggedAt = Number.NEGATIVE_INFINITY;
  return (progress) => {
    const at = now();
    startedAt ??= at;
    const complete = progress.totalBytes !== undefined && progress.bytes >= progress.totalBytes;
    if (!complete && at - loggedAt < intervalMs) return;
    loggedAt = at;
    const seconds = (at - startedAt) / 1000;
    const bytesPerSecond = seconds > 0 ? Math.round(progress.bytes / seconds) : undefined;
    const percent =
      progress.totalBytes !== undefined && progress.totalBytes > 0
        ? Math.min(100, Math.floor((progress.bytes / progress.totalBytes) * 100))
        : undefined;
    const verb = progress.phase === "generate" ? "generating the built-in model" : "downloading";
    const size = progress.totalBytes !== undefined ? ` of ${megabytes(progress.totalBytes)}` : "";
    const share = percent !== undefined ? ` (${percent}%)` : "";
    const rate = bytesPerSecond !== undefined ? `, ${megabytes(bytesPerSecond)}/s` : "";
    logger.info(
      { ...progress, ...(percent !== undefined ? { percent } : {}), ...(bytesPerSecond ? { bytesPerSecond } : {}) },
      `${verb} ${progress.model}: ${megabytes(progress.bytes)}${size}${share}${rate}`,
    );
  };
}
