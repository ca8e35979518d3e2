import { ResponseAssembler } from "../backend/response-assembler.js";
import { ROUTER_OVERLAP_WEIGHT_ANNOTATION, ROUTER_TEMPERATURE_ANNOTATION } from "../kv-router/llm-router.js";
import type { ModelCard } from "../model-card/model-card.js";
import { OffThreadTokenizer } from "../preprocessor/off-thread-tokenizer.js";
import { type GenerationParams, Preprocessor } from "../preprocessor/preprocessor.js";
import { loadTokenizer } from "../preprocessor/tokenizer.js";
import { tokenizerConfigFromCard } from "../preprocessor/tokenizer-config.js";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { ChatCompletionRequest, CommonRequestFields, CompletionRequest } from "../protocol/openai.js";
import type { PreprocessedRequest, SamplingOptions } from "../protocol/preprocessed-request.js";
import type { ChoiceDecoder, DecodedStep, ModelPipeline, PreprocessedInput } from "./model-pipeline.js";

/** Drops null/undefined fields: OpenAI clients send explicit nulls for "unset". */
function defined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined && v !== null)) as T;
}

function samplingOf(body: CommonRequestFields): SamplingOptions {
  return defined({
    temperature: body.temperature,
    topP: body.top_p,
    topK: body.top_k,
    minP: body.min_p,
    seed: body.seed,
    presencePenalty: body.presence_penalty,
    frequencyPenalty: body.frequency_penalty,
    repetitionPenalty: body.repetition_penalty,
    logitBias: body.logit_bias,
  } as SamplingOptions);
}

/** `nvext.router_config_override` as the annotations the KV router reads. */
function routerAnnotations(body: CommonRequestFields): Record<string, string> | undefined {
  const override = body.nvext?.router_config_override;
  if (override === undefined) return undefined;
  const annotations: Record<string, string> = {};
  if (override.overlap_score_weight !== undefined) {
    annotations[ROUTER_OVERLAP_WEIGHT_ANNOTATION] = String(override.overlap_score_weight);
  }
  if (override.router_temperature !== undefined) {
    annotations[ROUTER_TEMPERATURE_ANNOTATION] = String(override.router_temperature);
  }
  return Object.keys(annotations).length > 0 ? annotations : undefined;
}

/** OpenAI's and vLLM's `max_tokens` default for completions (chat gets whatever the context has left). */
export const DEFAULT_COMPLETION_MAX_TOKENS = 16;

function paramsOf(
  body: CommonRequestFields,
  maxTokens: number | null | undefined,
  logprobs: number | undefined,
  defaultMaxTokens?: number,
): GenerationParams {
  const annotations = routerAnnotations(body);
  return {
    maxTokens: maxTokens ?? null,
    ...(defaultMaxTokens === undefined ? {} : { defaultMaxTokens }),
    minTokens: body.min_tokens ?? null,
    stop: body.stop ?? null,
    stopTokenIds: body.stop_token_ids ?? null,
    ignoreEos: body.ignore_eos ?? null,
    sampling: samplingOf(body),
    logprobs: logprobs ?? null,
    ...(annotations !== undefined ? { annotations } : {}),
  };
}

export interface TokenizerPipelineOptions {
  /** How long one large prompt may take to tokenize in the thread. Default: `TDIST_TOKENIZE_TIMEOUT_MS`. */
  tokenizeTimeoutMs?: number;
  /** UTF-8 size from which prompts are tokenized in the thread. Default: the preprocessor's 16 KiB. */
  offThreadMinBytes?: number;
}

/**
 * The frontend's per-model pipeline over the model's real tokenizer and chat
 * template: OpenAI request → template → tokens, and engine tokens → text via
 * the incremental detokenizer and stop-string matcher. Prompts of 16 KiB or
 * more are tokenized in a worker thread with its own copy of the tokenizer
 * (started on the first such prompt; `close()` stops it), so one that takes
 * seconds does not hold up the other requests.
 */
export class TokenizerPipeline implements ModelPipeline {
  private readonly preprocessor: Preprocessor;
  private readonly offThread: OffThreadTokenizer;

  constructor(card: ModelCard, tokenizerJson: string, options: TokenizerPipelineOptions = {}) {
    const tokenizer = loadTokenizer({
      tokenizerJson,
      tokenizerConfig: tokenizerConfigFromCard(card),
      sha256: card.tokenizer.sha256,
    });
    this.offThread = new OffThreadTokenizer({
      tokenizer,
      tokenizerJson,
      ...(options.tokenizeTimeoutMs === undefined ? {} : { timeoutMs: options.tokenizeTimeoutMs }),
    });
    this.preprocessor = new Preprocessor({
      card,
      tokenizer,
      offThread: this.offThread,
      ...(options.offThreadMinBytes === undefined ? {} : { offThreadMinBytes: options.offThreadMinBytes }),
    });
  }

  static async create(card: ModelCard, tokenizerJson: string): Promise<ModelPipeline> {
    return new TokenizerPipeline(card, tokenizerJson);
  }

  async preprocessChat(body: ChatCompletionRequest, call: { signal?: AbortSignal } = {}): Promise<PreprocessedInput> {
    const logprobs = body.logprobs ? (body.top_logprobs ?? 0) : undefined;
    const result = await this.preprocessor.preprocessChatAsync(
      {
        messages: body.messages as never,
        ...(body.tools ? { tools: body.tools as never } : {}),
        ...(body.chat_template_kwargs ? { chatTemplateKwargs: body.chat_template_kwargs } : {}),
      },
      paramsOf(body, body.max_completion_tokens ?? body.max_tokens, logprobs),
      call,
    );
    return { request: result.request, stopStrings: result.stopStrings };
  }

  async preprocessCompletion(
    body: CompletionRequest,
    prompt: string | number[],
    call: { signal?: AbortSignal } = {},
  ): Promise<PreprocessedInput> {
    const result = await this.preprocessor.preprocessCompletionAsync(
      { prompt },
      paramsOf(body, body.max_tokens, body.logprobs ?? undefined, DEFAULT_COMPLETION_MAX_TOKENS),
      call,
    );
    return { request: result.request, stopStrings: result.stopStrings };
  }

  /** Tokenizer threads running (0 until the first large prompt, and after `close()`). */
  get tokenizerThreads(): number {
    return this.offThread.liveThreads;
  }

  /** Stops the tokenizer thread (prompts waiting for it are refused with `shutting_down`). */
  async close(): Promise<void> {
    await this.offThread.close();
  }

  decoder(request: PreprocessedRequest, stopStrings: readonly string[]): ChoiceDecoder {
    const assembler = ResponseAssembler.forRequest(this.preprocessor.tokenizer, request, stopStrings);
    const toStep = (chunk: ReturnType<ResponseAssembler["push"]>): DecodedStep => {
      if (chunk === undefined) return { text: "", tokenIds: [] };
      const step: DecodedStep = { text: chunk.text, tokenIds: chunk.tokenIds };
      if (chunk.logprobs) step.logprobs = chunk.logprobs;
      if (chunk.finishReason) step.finishReason = chunk.finishReason;
      return step;
    };
    return {
      push: (output: EngineOutput) => toStep(assembler.push(output)),
      flush: () => toStep(assembler.finish("error", "the engine stream ended without a finish reason")),
      get completionTokens() {
        return assembler.completionTokens;
      },
    };
  }

  tokenText(tokenId: number): string {
    return this.preprocessor.tokenizer.decode([tokenId], { skipSpecialTokens: false });
  }
}
