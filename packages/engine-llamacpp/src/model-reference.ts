import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { TdistError } from "@tdist/runtime";
import type { ModelProgressListener } from "./model-progress.js";
import { defaultCacheDir } from "./tiny-model.js";

export interface ResolveModelOptions {
  /** Cache root; downloads go to its `models/` folder. Default `defaultCacheDir()`. */
  cacheDir?: string;
  /** Print node-llama-cpp's download progress bar (CLI use). Default false. */
  progressBar?: boolean;
  /** Hears the download's progress (phase `download`), ending with all bytes; not called for a cached or local file. */
  onProgress?: ModelProgressListener;
  /** Hugging Face endpoint. Default: `MODEL_ENDPOINT` or `HF_ENDPOINT` (read by node-llama-cpp), else huggingface.co. */
  huggingFaceEndpoint?: string;
  signal?: AbortSignal;
}

/** Whether `reference` names a remote model (`hf:...`, `huggingface:...`, `http(s)://...`) rather than a local path. */
export function isRemoteModelReference(reference: string): boolean {
  return /^(hf:|hf:\/\/|huggingface:|https?:\/\/)/i.test(reference);
}

/**
 * A local GGUF path for `--model`: a local path as it is (it must exist), or
 * a remote reference (`hf:<user>/<repo>/<file>.gguf`, `hf:<user>/<repo>:<quant>`,
 * or a URL) downloaded once into the cache with node-llama-cpp's downloader.
 * Errors: `bad_request` for a missing local file or an unknown reference,
 * `cannot_connect` when the download fails (offline, unknown repo, ...).
 *
 * ```ts
 * const modelPath = await resolveModelReference("hf:Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf", { progressBar: true });
 * ```
 */
export async function resolveModelReference(reference: string, options: ResolveModelOptions = {}): Promise<string> {
  if (typeof reference !== "string" || reference.trim() === "") {
    throw new TdistError("bad_request", "a model reference is a GGUF path or an hf:<user>/<repo>/<file> reference");
  }
  if (!isRemoteModelReference(reference)) {
    const path = resolve(reference);
    try {
      if (!(await stat(path)).isFile()) throw new TdistError("bad_request", `model ${path} is not a file`);
    } catch (err) {
      throw TdistError.wrap(err, "bad_request", `model file ${path} cannot be read`);
    }
    return path;
  }
  const directory = join(options.cacheDir ?? defaultCacheDir(), "models");
  // Loaded on demand: the downloader pulls in much of node-llama-cpp (never its native part).
  const { resolveModelFile } = await import("node-llama-cpp");
  const endpoints =
    options.huggingFaceEndpoint !== undefined ? { endpoints: { huggingFace: options.huggingFaceEndpoint } } : {};
  try {
    return await resolveModelFile(reference, { directory, download: false, cli: false, ...endpoints });
  } catch {
    // Not downloaded yet.
  }
  // The downloader retries a refused connection for minutes; find out at once whether the host answers.
  await probe(reference, options);
  const { onProgress } = options;
  let complete = false;
  const report = (bytes: number, totalBytes: number | undefined): void => {
    complete = totalBytes !== undefined && bytes >= totalBytes;
    onProgress?.({ phase: "download", model: reference, bytes, totalBytes });
  };
  try {
    const path = await resolveModelFile(reference, {
      directory,
      cli: options.progressBar ?? false,
      ...(onProgress !== undefined
        ? {
            onProgress: ({ totalSize, downloadedSize }: { totalSize: number; downloadedSize: number }) =>
              report(downloadedSize, totalSize > 0 ? totalSize : undefined),
          }
        : {}),
      ...endpoints,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    });
    // The downloader need not report the last bytes: listeners hear the end at 100%.
    if (onProgress !== undefined && !complete) {
      const size = (await stat(path)).size;
      report(size, size);
    }
    return path;
  } catch (err) {
    if (options.signal?.aborted) throw TdistError.wrap(err, "cancelled", `download of ${reference} cancelled`);
    throw TdistError.wrap(err, "cannot_connect", `cannot download model ${reference}`);
  }
}

const PROBE_TIMEOUT_MS = 10_000;

/** Fails with `cannot_connect` unless the host a remote reference downloads from answers HTTP at all. */
async function probe(reference: string, options: ResolveModelOptions): Promise<void> {
  const host = /^https?:\/\//i.test(reference)
    ? new URL(reference).origin
    : (options.huggingFaceEndpoint ??
      process.env.MODEL_ENDPOINT ??
      process.env.HF_ENDPOINT ??
      "https://huggingface.co/");
  const signals = [AbortSignal.timeout(PROBE_TIMEOUT_MS), ...(options.signal !== undefined ? [options.signal] : [])];
  try {
    // Any HTTP answer, even an error status, means the host is reachable.
    await fetch(host, { method: "HEAD", signal: AbortSignal.any(signals) });
  } catch (err) {
    if (options.signal?.aborted) throw TdistError.wrap(err, "cancelled", `download of ${reference} cancelled`);
    throw new TdistError(
      "cannot_connect",
      `cannot download model ${reference}: ${host} does not answer (offline? download the GGUF elsewhere and pass its local path)`,
      { cause: err },
    );
  }
}
