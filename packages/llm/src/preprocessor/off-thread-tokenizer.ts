import { Worker } from "node:worker_threads";
import { readEnv, TdistError } from "@tdist/runtime";
import { PreprocessorEnv } from "./preprocessor-env.js";
import type { EncodeOptions, Tokenizer } from "./tokenizer.js";

export interface OffThreadTokenizerOptions {
  /** The main thread's tokenizer: its build options and `add_bos_token` rule are the thread's. */
  tokenizer: Tokenizer;
  /** The tokenizer.json text `tokenizer` was built from; the thread builds its own copy from it. */
  tokenizerJson: string;
  /**
   * How long one `encode` may take, waiting behind other prompts included.
   * Default: `TDIST_TOKENIZE_TIMEOUT_MS` (10 s).
   */
  timeoutMs?: number;
}

/** Where a prompt was when its deadline passed. */
export type TokenizeDeadlinePhase = "queued" | "tokenizing";

/**
 * `encode` ran past its deadline (code `timeout`). `phase` says whether the
 * prompt itself took that long (`tokenizing`: the thread was stopped) or it
 * never got its turn (`queued`: behind other prompts, or while the thread was
 * still building its vocabulary).
 */
export class TokenizeDeadlineError extends TdistError {
  constructor(
    readonly phase: TokenizeDeadlinePhase,
    readonly timeoutMs: number,
  ) {
    super(
      "timeout",
      phase === "tokenizing"
        ? `tokenizing the prompt took longer than ${timeoutMs} ms`
        : `the prompt waited ${timeoutMs} ms for the tokenizer thread (starting, or busy with other prompts)`,
    );
    this.name = "TokenizeDeadlineError";
  }
}

interface Job {
  readonly id: number;
  readonly text: string;
  readonly addSpecialTokens: boolean;
  readonly resolve: (ids: number[]) => void;
  readonly reject: (err: unknown) => void;
  /** Unlinks the job's timer and abort listener. */
  release(): void;
}

interface ThreadReply {
  ready?: true;
  id?: number;
  ids?: Uint32Array;
  error?: string;
}

const THREAD_SCRIPT = new URL("./tokenizer-thread.js", import.meta.url);

/**
 * Tokenizes prompts in a worker thread holding its own copy of a model's
 * tokenizer, so a prompt that takes seconds to tokenize does not stop the
 * event loop serving other requests.
 *
 * ```ts
 * const offThread = new OffThreadTokenizer({ tokenizer, tokenizerJson, timeoutMs: 10_000 });
 * const ids = await offThread.encode(hugePrompt, { addSpecialTokens: true }, { signal });
 * await offThread.close();
 * ```
 *
 * One thread, started on the first `encode` (building Qwen3's vocabulary
 * takes ~0.3-0.6 s and tens of MB, which a model that never sees a large
 * prompt should not pay), serving prompts one at a time in arrival order.
 * One rather than a pool: prompt tokenization is CPU-bound, and the
 * frontend's cores also run its event loop; more threads would not make a
 * flood of large prompts cheaper, only take more cores from every other
 * request. A prompt past its deadline while tokenizing stops the thread
 * (`worker.terminate()`, the only way to interrupt a running encode); the
 * next prompt starts a new one. A cancelled prompt that is running also stops
 * the thread, so disconnecting does not leave the CPU busy with it.
 *
 * The thread is unref'd while it has nothing to do, so an unclosed instance
 * never keeps a process alive; `close()` stops it and refuses what is pending.
 */
export class OffThreadTokenizer {
  readonly timeoutMs: number;
  readonly #tokenizer: Tokenizer;
  readonly #tokenizerJson: string;
  readonly #queue: Job[] = [];
  #running: Job | undefined;
  #worker: Worker | undefined;
  /** Whether `#worker` has built its vocabulary. */
  #ready = false;
  readonly #live = new Set<Worker>();
  #nextId = 0;
  #closed = false;

  constructor(options: OffThreadTokenizerOptions) {
    this.#tokenizer = options.tokenizer;
    this.#tokenizerJson = options.tokenizerJson;
    this.timeoutMs = options.timeoutMs ?? readEnv(PreprocessorEnv.tokenizeTimeoutMs);
    if (!Number.isInteger(this.timeoutMs) || this.timeoutMs < 1) {
      throw new TdistError("invalid_option", `timeoutMs must be an integer >= 1 (got ${this.timeoutMs})`);
    }
  }

  /** The running thread's id; undefined before the first prompt, after a stop and after `close()`. */
  get threadId(): number | undefined {
    return this.#worker?.threadId;
  }

  /** Threads started and not yet exited (stopped ones count until they have exited). */
  get liveThreads(): number {
    return this.#live.size;
  }

  /**
   * `tokenizer.encode(text, options)`, computed in the thread. Rejects with a
   * `TokenizeDeadlineError` past the deadline, `cancelled` when `signal`
   * aborts, `shutting_down` after `close()`.
   */
  encode(text: string, options: EncodeOptions = {}, call: { signal?: AbortSignal } = {}): Promise<number[]> {
    if (this.#closed) return Promise.reject(new TdistError("shutting_down", "the tokenizer thread is closed"));
    const signal = call.signal;
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    const addSpecialTokens = options.addSpecialTokens ?? true;
    return new Promise<number[]>((resolve, reject) => {
      const job: Job = {
        id: this.#nextId++,
        text,
        addSpecialTokens,
        resolve: (ids) => resolve(this.#tokenizer.finishEncoding(ids, { addSpecialTokens })),
        reject,
        release: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      const timer = setTimeout(() => {
        const phase = this.#running === job && this.#ready ? "tokenizing" : "queued";
        this.#fail(job, new TokenizeDeadlineError(phase, this.timeoutMs));
      }, this.timeoutMs);
      const onAbort = (): void => this.#fail(job, cancelled(signal));
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(job);
      this.#dispatch();
    });
  }

  /** Stops the thread; pending prompts are refused with `shutting_down`. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const pending = [...(this.#running ? [this.#running] : []), ...this.#queue];
    this.#queue.length = 0;
    this.#running = undefined;
    for (const job of pending) {
      job.release();
      job.reject(new TdistError("shutting_down", "the tokenizer thread was closed"));
    }
    await this.#stopWorker();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Ends a job that has not finished: a queued one leaves the queue, a running one stops the thread. */
  #fail(job: Job, err: unknown): void {
    job.release();
    job.reject(err);
    if (this.#running === job) {
      this.#running = undefined;
      void this.#stopWorker();
      this.#dispatch();
      return;
    }
    const index = this.#queue.indexOf(job);
    if (index >= 0) this.#queue.splice(index, 1);
  }

  #dispatch(): void {
    if (this.#running !== undefined || this.#closed) return;
    const job = this.#queue.shift();
    if (job === undefined) {
      this.#worker?.unref();
      return;
    }
    this.#running = job;
    const worker = this.#startedWorker();
    worker.ref();
    worker.postMessage({ id: job.id, text: job.text, addSpecialTokens: job.addSpecialTokens });
  }

  #startedWorker(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const worker = new Worker(THREAD_SCRIPT, {
      workerData: { tokenizerJson: this.#tokenizerJson, hfConfig: this.#tokenizer.hfConfig },
    });
    worker.on("message", (reply: ThreadReply) => this.#onReply(worker, reply));
    worker.on("error", (err) => this.#onWorkerGone(worker, err));
    worker.on("exit", (exitCode) => {
      this.#live.delete(worker);
      this.#onWorkerGone(worker, new Error(`the thread exited with code ${exitCode}`));
    });
    this.#live.add(worker);
    this.#worker = worker;
    this.#ready = false;
    return worker;
  }

  #onReply(worker: Worker, reply: ThreadReply): void {
    if (worker !== this.#worker) return;
    if (reply.ready === true) {
      this.#ready = true;
      return;
    }
    const job = this.#running;
    if (job === undefined || reply.id !== job.id) return;
    this.#running = undefined;
    job.release();
    if (reply.ids !== undefined) job.resolve(Array.from(reply.ids));
    else job.reject(new TdistError("internal", `the tokenizer thread failed: ${reply.error ?? "no ids"}`));
    this.#dispatch();
  }

  /** The thread died on its own (it could not build the tokenizer, or ran out of memory). */
  #onWorkerGone(worker: Worker, err: Error): void {
    if (worker !== this.#worker) return;
    this.#worker = undefined;
    const job = this.#running;
    if (job === undefined) return;
    this.#running = undefined;
    job.release();
    job.reject(TdistError.wrap(err, "internal", "the tokenizer thread stopped"));
    this.#dispatch();
  }

  async #stopWorker(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    if (worker === undefined) return;
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    await worker.terminate();
    await exited;
  }
}

function cancelled(signal: AbortSignal | undefined): TdistError {
  return new TdistError("cancelled", "tokenizing the prompt was cancelled", { cause: signal?.reason });
}
