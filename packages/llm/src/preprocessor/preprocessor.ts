import type { ModelCard } from "../model-card/model-card.js";
import type { PreprocessedRequest, SamplingOptions, StopConditions } from "../protocol/preprocessed-request.js";
import { CHATML_FALLBACK_TEMPLATE, ChatTemplate, type ChatTemplateInput } from "./chat-template.js";
import { type OffThreadTokenizer, TokenizeDeadlineError } from "./off-thread-tokenizer.js";
import { RequestParamError } from "./request-param-error.js";
import type { Tokenizer } from "./tokenizer.js";

/** The card fields the preprocessor reads. */
export type PreprocessorCard = Pick<
  ModelCard,
  "name" | "chatTemplate" | "bosToken" | "eosToken" | "addBosToken" | "eosTokenIds" | "contextLength"
>;

export interface PreprocessorOptions {
  card: PreprocessorCard;
  tokenizer: Tokenizer;
  /**
   * Where `preprocessChatAsync` and `preprocessCompletionAsync` tokenize
   * prompts of `offThreadMinBytes` or more (the same tokenizer, in a worker
   * thread); absent: every prompt in line.
   */
  offThread?: OffThreadTokenizer;
  /** UTF-8 size from which a prompt goes to `offThread`. Default `OFF_THREAD_MIN_BYTES`. */
  offThreadMinBytes?: number;
}

/**
 * Prompts of 16 KiB or more are tokenized off the event loop. Measured with
 * Qwen3's tokenizer on a busy 2-core machine: English prose costs ~0.15
 * µs/byte (16 KiB: ~2.7 ms, in line is cheaper than a thread round trip),
 * but the worst inputs found (one letter, digit, space or newline repeated)
 * cost 4-8 µs/byte (16 KiB: 60-130 ms; "a" x 1 MB: 7.5 s). 16 KiB bounds what
 * one request can stop the event loop for at about a tenth of a second while
 * every ordinary prompt below it keeps its in-line cost.
 */
export const OFF_THREAD_MIN_BYTES = 16 * 1024;

/** The per-call options of the async preprocessing methods. */
export interface PreprocessCallOptions {
  /** Stops waiting for an off-thread tokenization (a `cancelled` error). */
  signal?: AbortSignal;
}

/** A chat request's prompt side; the frontend maps its OpenAI request onto this. */
export type ChatInput = ChatTemplateInput;

/** A completion request's prompt: text, or token ids used as they are. */
export interface CompletionInput {
  prompt: string | readonly number[];
}

/** The generation fields of a request, already mapped from OpenAI's names. */
export interface GenerationParams {
  /** OpenAI `max_tokens` / `max_completion_tokens`; absent: `defaultMaxTokens`. */
  maxTokens?: number | null;
  /**
   * Used when `maxTokens` is absent, capped at what the context has left
   * (completions: 16, as OpenAI and vLLM); absent: whatever the context has left.
   */
  defaultMaxTokens?: number;
  minTokens?: number | null;
  /** Stop strings; the backend stage enforces them (they never reach the engine). */
  stop?: string | readonly string[] | null;
  stopTokenIds?: readonly number[] | null;
  ignoreEos?: boolean | null;
  sampling?: SamplingOptions;
  /** Logprobs per token: 0 = only the chosen token's, n = plus n alternatives; absent: none. */
  logprobs?: number | null;
  annotations?: Record<string, string>;
}

export interface PreprocessResult {
  request: PreprocessedRequest;
  /** Non-empty stop strings for the backend's StopStringMatcher. */
  stopStrings: string[];
  /** `request.tokenIds.length`. */
  promptTokens: number;
  /** The rendered chat prompt (chat requests only). */
  prompt?: string;
}

/**
 * Turns chat and completion requests into the token-level request engines
 * serve: chat template → tokens, limits checked against the context length.
 *
 * ```ts
 * const preprocessor = new Preprocessor({ card, tokenizer: loadTokenizer(files) });
 * const { request, stopStrings } = preprocessor.preprocessChat(
 *   { messages: [{ role: "user", content: "Hi" }] },
 *   { maxTokens: 64, stop: ["\n\n"] },
 * );
 * ```
 *
 * Limits (decided to match vLLM and OpenAI rather than silently clamping):
 * - a prompt that leaves no room in `card.contextLength` for one generated
 *   token is a `RequestParamError` on `messages` / `prompt`;
 * - `maxTokens` with `prompt + maxTokens > contextLength` is a
 *   `RequestParamError` on `max_tokens`; both carry
 *   `openaiCode: "context_length_exceeded"`;
 * - without `maxTokens`, `stop.maxTokens = min(defaultMaxTokens, contextLength - promptTokens)`;
 * - a prompt text whose size alone proves it cannot fit is refused before it
 *   is tokenized (`Tokenizer.minTokenCount`): tokenizing megabytes blocks
 *   the event loop for seconds;
 * - with `offThread`, the async methods tokenize prompts of
 *   `offThreadMinBytes` or more in its worker thread, so the event loop is
 *   free meanwhile, and refuse one that takes longer than its deadline
 *   (`openaiCode: "prompt_too_complex"`).
 *
 * BOS: chat prompts are encoded without the tokenizer's post-processor (the
 * template writes the special tokens it wants, as in transformers); when the
 * model says `add_bos_token` and the rendered prompt does not start with bos,
 * bos is prepended, so it is never doubled. Completion text goes through the
 * post-processor and the same add_bos_token rule. Token-id prompts are used
 * as given.
 */
export class Preprocessor {
  readonly card: PreprocessorCard;
  readonly tokenizer: Tokenizer;
  readonly eosTokenIds: readonly number[];
  readonly #addBosToken: boolean;
  readonly #bosToken: string | undefined;
  readonly #eosToken: string | undefined;
  readonly #offThread: OffThreadTokenizer | undefined;
  readonly #offThreadMinBytes: number;

  constructor(options: PreprocessorOptions) {
    this.card = options.card;
    this.tokenizer = options.tokenizer;
    const fromTokenizer = this.tokenizer.eosTokenId === undefined ? [] : [this.tokenizer.eosTokenId];
    this.eosTokenIds = options.card.eosTokenIds.length > 0 ? [...options.card.eosTokenIds] : fromTokenizer;
    this.#addBosToken = options.card.addBosToken ?? this.tokenizer.addBosToken;
    this.#bosToken = options.card.bosToken ?? this.tokenizer.bosToken;
    this.#eosToken = options.card.eosToken ?? this.tokenizer.eosToken;
    this.#offThread = options.offThread;
    this.#offThreadMinBytes = options.offThreadMinBytes ?? OFF_THREAD_MIN_BYTES;
  }

  /** The chat template text in use: the card's, else the tokenizer config's, else ChatML. */
  chatTemplateSource(options: { tools?: boolean } = {}): string {
    return this.card.chatTemplate ?? this.tokenizer.chatTemplate(options) ?? CHATML_FALLBACK_TEMPLATE;
  }

  /** Renders a chat through the model's template without tokenizing it. */
  renderChat(input: ChatInput): string {
    if (!Array.isArray(input.messages) || input.messages.length === 0) {
      throw new RequestParamError("messages", "messages must be a non-empty array");
    }
    const hasTools = input.tools !== undefined && input.tools !== null && input.tools.length > 0;
    const template = new ChatTemplate(this.chatTemplateSource({ tools: hasTools }), {
      bosToken: this.#bosToken,
      eosToken: this.#eosToken,
    });
    return template.render(input);
  }

  /** Renders and tokenizes in line (see `preprocessChatAsync` for prompts that may be large). */
  preprocessChat(input: ChatInput, params: GenerationParams = {}): PreprocessResult {
    const prompt = this.renderChat(input);
    this.#refuseOversized(prompt, "messages");
    const tokenIds = this.tokenizer.encode(prompt, { addSpecialTokens: false });
    return this.#finishChat(prompt, tokenIds, params);
  }

  /**
   * `preprocessChat`, with the rendered prompt tokenized by `offThread` when
   * it is `offThreadMinBytes` or more (the template renders in line: it is
   * cheap). A prompt whose tokenization runs past the thread's deadline is a
   * `RequestParamError` on `messages` with `openaiCode: "prompt_too_complex"`.
   */
  async preprocessChatAsync(
    input: ChatInput,
    params: GenerationParams = {},
    call: PreprocessCallOptions = {},
  ): Promise<PreprocessResult> {
    const prompt = this.renderChat(input);
    this.#refuseOversized(prompt, "messages");
    if (!this.#goesOffThread(prompt)) {
      return this.#finishChat(prompt, this.tokenizer.encode(prompt, { addSpecialTokens: false }), params);
    }
    const tokenIds = await this.#encodeOffThread(prompt, false, "messages", call);
    return this.#finishChat(prompt, tokenIds, params);
  }

  /** Tokenizes in line (see `preprocessCompletionAsync` for prompts that may be large). */
  preprocessCompletion(input: CompletionInput, params: GenerationParams = {}): PreprocessResult {
    if (typeof input.prompt === "string") {
      this.#refuseOversized(input.prompt, "prompt");
      return this.#finish(this.tokenizer.encode(input.prompt, { addSpecialTokens: true }), params, "prompt");
    }
    return this.#finish(this.#checkedPromptIds(input.prompt), params, "prompt");
  }

  /** `preprocessCompletion`, with text prompts of `offThreadMinBytes` or more tokenized by `offThread`. */
  async preprocessCompletionAsync(
    input: CompletionInput,
    params: GenerationParams = {},
    call: PreprocessCallOptions = {},
  ): Promise<PreprocessResult> {
    if (typeof input.prompt !== "string" || !this.#goesOffThread(input.prompt)) {
      return this.preprocessCompletion(input, params);
    }
    this.#refuseOversized(input.prompt, "prompt");
    const tokenIds = await this.#encodeOffThread(input.prompt, true, "prompt", call);
    return this.#finish(tokenIds, params, "prompt");
  }

  #goesOffThread(text: string): boolean {
    if (this.#offThread === undefined) return false;
    // UTF-8 takes 1-3 bytes per UTF-16 unit: most prompts are decided without counting.
    if (text.length >= this.#offThreadMinBytes) return true;
    if (text.length * 3 < this.#offThreadMinBytes) return false;
    return Buffer.byteLength(text) >= this.#offThreadMinBytes;
  }

  async #encodeOffThread(
    text: string,
    addSpecialTokens: boolean,
    promptParam: "messages" | "prompt",
    call: PreprocessCallOptions,
  ): Promise<number[]> {
    const offThread = this.#offThread;
    if (offThread === undefined) return this.tokenizer.encode(text, { addSpecialTokens });
    try {
      return await offThread.encode(text, { addSpecialTokens }, call.signal ? { signal: call.signal } : {});
    } catch (err) {
      if (err instanceof TokenizeDeadlineError && err.phase === "tokenizing") {
        throw new RequestParamError(
          promptParam,
          `Your ${promptParam} (${Buffer.byteLength(text)} bytes) took longer than ${err.timeoutMs} ms to tokenize. ` +
            `Please shorten the ${promptParam}.`,
          { cause: err, openaiCode: "prompt_too_complex" },
        );
      }
      throw err;
    }
  }

  #finishChat(prompt: string, tokenIds: number[], params: GenerationParams): PreprocessResult {
    const bosTokenId = this.tokenizer.bosTokenId;
    if (this.#addBosToken && bosTokenId !== undefined && tokenIds[0] !== bosTokenId) tokenIds.unshift(bosTokenId);
    return { ...this.#finish(tokenIds, params, "messages"), prompt };
  }

  #checkedPromptIds(prompt: unknown): number[] {
    let tokenIds: number[];
    if (Array.isArray(prompt)) {
      tokenIds = [...(prompt as number[])];
      for (const [index, id] of tokenIds.entries()) {
        if (!Number.isInteger(id) || id < 0 || id >= this.tokenizer.vocabSize) {
          throw new RequestParamError(
            "prompt",
            `prompt[${index}] = ${String(id)} is not a token id of this model (0..${this.tokenizer.vocabSize - 1})`,
          );
        }
      }
    } else {
      throw new RequestParamError("prompt", "prompt must be a string or an array of token ids");
    }
    return tokenIds;
  }

  /** `logit_bias` as engines take it: token ids of this model to biases in [-100, 100]; an empty one is dropped. */
  #checkLogitBias(bias: Record<string, number>): Record<string, number> | undefined {
    if (typeof bias !== "object" || bias === null || Array.isArray(bias)) {
      throw new RequestParamError("logit_bias", "logit_bias must be an object of token ids to numbers");
    }
    const entries = Object.entries(bias);
    if (entries.length > MAX_LOGIT_BIAS_ENTRIES) {
      throw new RequestParamError(
        "logit_bias",
        `logit_bias has ${entries.length} entries; at most ${MAX_LOGIT_BIAS_ENTRIES} are allowed`,
      );
    }
    const vocabSize = this.tokenizer.vocabSize;
    const checked: Record<string, number> = {};
    for (const [key, value] of entries) {
      const id = Number(key);
      if (!/^(0|[1-9][0-9]*)$/.test(key) || id >= vocabSize) {
        throw new RequestParamError(
          "logit_bias",
          `logit_bias key ${JSON.stringify(key)} is not a token id of this model (0..${vocabSize - 1})`,
        );
      }
      if (typeof value !== "number" || !Number.isFinite(value) || value < -100 || value > 100) {
        throw new RequestParamError("logit_bias", `logit_bias[${key}] must be a number in [-100, 100]`);
      }
      checked[key] = value;
    }
    return entries.length === 0 ? undefined : checked;
  }

  /** Refuses text that cannot fit the context whatever it tokenizes to, without tokenizing it. */
  #refuseOversized(text: string, promptParam: "messages" | "prompt"): void {
    const contextLength = this.card.contextLength;
    // Only a shortcut: text this short tokenizes quickly, and the token count is checked after.
    if (text.length < contextLength) return;
    const atLeast = this.tokenizer.minTokenCount(text);
    if (atLeast === undefined || atLeast < contextLength) return;
    throw new RequestParamError(
      promptParam,
      `This model's maximum context length is ${contextLength} tokens. However, your ${promptParam} is ` +
        `${Buffer.byteLength(text)} bytes, which is at least ${atLeast} tokens and leaves no room to generate. ` +
        `Please reduce the length of the ${promptParam}.`,
      { openaiCode: "context_length_exceeded" },
    );
  }

  #finish(tokenIds: number[], params: GenerationParams, promptParam: "messages" | "prompt"): PreprocessResult {
    const contextLength = this.card.contextLength;
    const promptTokens = tokenIds.length;
    if (promptTokens === 0) throw new RequestParamError(promptParam, `the ${promptParam} must not be empty`);
    if (promptTokens >= contextLength) {
      throw new RequestParamError(
        promptParam,
        `This model's maximum context length is ${contextLength} tokens. However, your ${promptParam} resulted in ` +
          `${promptTokens} tokens, which leaves no room to generate. Please reduce the length of the ${promptParam}.`,
        { openaiCode: "context_length_exceeded" },
      );
    }
    const remaining = contextLength - promptTokens;
    let maxTokens = Math.min(params.defaultMaxTokens ?? remaining, remaining);
    if (params.maxTokens !== undefined && params.maxTokens !== null) {
      if (!Number.isInteger(params.maxTokens) || params.maxTokens < 1) {
        throw new RequestParamError("max_tokens", `max_tokens must be an integer >= 1 (got ${params.maxTokens})`);
      }
      if (params.maxTokens > remaining) {
        throw new RequestParamError(
          "max_tokens",
          `This model's maximum context length is ${contextLength} tokens. However, you requested ` +
            `${promptTokens + params.maxTokens} tokens (${promptTokens} in the ${promptParam}, ${params.maxTokens} ` +
            `in the completion). Please reduce the length of the ${promptParam} or completion.`,
          { openaiCode: "context_length_exceeded" },
        );
      }
      maxTokens = params.maxTokens;
    }
    const stop: StopConditions = { maxTokens };
    if (params.minTokens !== undefined && params.minTokens !== null && params.minTokens !== 0) {
      if (!Number.isInteger(params.minTokens) || params.minTokens < 0 || params.minTokens > maxTokens) {
        throw new RequestParamError(
          "min_tokens",
          `min_tokens must be an integer between 0 and max_tokens (${maxTokens}) (got ${params.minTokens})`,
        );
      }
      stop.minTokens = params.minTokens;
    }
    if (params.stopTokenIds !== undefined && params.stopTokenIds !== null && params.stopTokenIds.length > 0) {
      for (const [index, id] of params.stopTokenIds.entries()) {
        if (!Number.isInteger(id) || id < 0) {
          throw new RequestParamError("stop_token_ids", `stop_token_ids[${index}] must be a non-negative integer`);
        }
      }
      stop.stopTokenIds = [...params.stopTokenIds];
    }
    if (params.ignoreEos === true) stop.ignoreEos = true;
    const sampling: SamplingOptions = { ...params.sampling };
    if (sampling.logitBias !== undefined) {
      const bias = this.#checkLogitBias(sampling.logitBias);
      if (bias === undefined) delete sampling.logitBias;
      else sampling.logitBias = bias;
    }
    const request: PreprocessedRequest = {
      model: this.card.name,
      tokenIds,
      sampling,
      stop,
      eosTokenIds: [...this.eosTokenIds],
      output: {},
    };
    if (params.logprobs !== undefined && params.logprobs !== null) {
      if (!Number.isInteger(params.logprobs) || params.logprobs < 0) {
        throw new RequestParamError("logprobs", `logprobs must be a non-negative integer (got ${params.logprobs})`);
      }
      request.output.logprobs = params.logprobs;
    }
    if (params.annotations !== undefined) request.annotations = { ...params.annotations };
    return { request, stopStrings: normalizeStopStrings(params.stop), promptTokens };
  }
}

/** OpenAI's limit on `logit_bias` entries. */
const MAX_LOGIT_BIAS_ENTRIES = 300;

function normalizeStopStrings(stop: GenerationParams["stop"]): string[] {
  if (stop === undefined || stop === null) return [];
  const list = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(list)) throw new RequestParamError("stop", "stop must be a string or an array of strings");
  for (const [index, value] of list.entries()) {
    if (typeof value !== "string") throw new RequestParamError("stop", `stop[${index}] must be a string`);
  }
  return [...new Set(list.filter((value) => value.length > 0))];
}
