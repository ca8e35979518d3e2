import type { Tokenizer } from "../preprocessor/tokenizer.js";
import type { EngineOutput, FinishReason, TokenLogprob } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { IncrementalDetokenizer } from "./incremental-detokenizer.js";
import { StopStringMatcher } from "./stop-string-matcher.js";

export interface ResponseAssemblerOptions {
  tokenizer: Tokenizer;
  /** Most tokens to accept; the token that reaches it ends the response with `length`. */
  maxTokens: number;
  /** Before this many tokens, eos, stop ids and stop strings do not end the response. */
  minTokens?: number;
  eosTokenIds?: readonly number[];
  stopTokenIds?: readonly number[];
  ignoreEos?: boolean;
  stopStrings?: readonly string[];
  /** Default `true`. */
  skipSpecialTokens?: boolean;
}

/** One piece of a response, produced per engine output. `text` may be "" (a split character, held stop text). */
export interface ResponseChunk {
  text: string;
  /** Token ids this chunk consumed (the eos / stop token included). */
  tokenIds: number[];
  logprobs?: TokenLogprob[];
  /** Set on the last chunk. */
  finishReason?: FinishReason;
  /** What ended a `stop`: the stop string, or the eos / stop token id. */
  stopReason?: string | number;
  /** With `finishReason: "error"`. */
  error?: string;
  /** Prompt tokens the engine found cached, when it said. */
  cachedTokens?: number;
}

/**
 * The backend stage: engine outputs → incremental detokenizer → stop
 * strings → response chunks with a finish reason.
 *
 * ```ts
 * const assembler = ResponseAssembler.forRequest(tokenizer, request, stopStrings);
 * for await (const chunk of assembleResponse(engineStream, assembler)) send(chunk);
 * ```
 *
 * Tokens are taken one at a time even when an engine batches them, so a
 * stop lands on the right token; tokens after the end are dropped.
 * Finish reasons:
 * - `stop`: an eos id (unless `ignoreEos`) or stop id — its text is not
 *   emitted — or a stop string — the text before it is emitted;
 * - `length`: the `maxTokens`th token (its text is emitted);
 * - otherwise the engine's reason (`stop`, `length`, `cancelled`, `error`),
 *   or the caller's through `finish()`.
 * Completion tokens, as in vLLM, are the tokens consumed up to and including
 * the one that ended the response.
 */
export class ResponseAssembler {
  readonly #detokenizer: IncrementalDetokenizer;
  readonly #matcher: StopStringMatcher;
  readonly #maxTokens: number;
  readonly #minTokens: number;
  readonly #eosIds: ReadonlySet<number>;
  readonly #stopIds: ReadonlySet<number>;
  #completionTokens = 0;
  #finishReason: FinishReason | undefined;
  #cachedTokens: number | undefined;

  constructor(options: ResponseAssemblerOptions) {
    this.#detokenizer = new IncrementalDetokenizer(options.tokenizer, {
      skipSpecialTokens: options.skipSpecialTokens ?? true,
    });
    this.#matcher = new StopStringMatcher(options.stopStrings ?? []);
    this.#maxTokens = options.maxTokens;
    this.#minTokens = options.minTokens ?? 0;
    this.#eosIds = new Set(options.ignoreEos ? [] : (options.eosTokenIds ?? []));
    this.#stopIds = new Set(options.stopTokenIds ?? []);
  }

  /** An assembler with the limits of a preprocessed request. */
  static forRequest(
    tokenizer: Tokenizer,
    request: PreprocessedRequest,
    stopStrings: readonly string[] = [],
    options: { skipSpecialTokens?: boolean } = {},
  ): ResponseAssembler {
    const assemblerOptions: ResponseAssemblerOptions = {
      tokenizer,
      maxTokens: request.stop.maxTokens,
      eosTokenIds: request.eosTokenIds,
      stopStrings,
    };
    if (request.stop.minTokens !== undefined) assemblerOptions.minTokens = request.stop.minTokens;
    if (request.stop.stopTokenIds !== undefined) assemblerOptions.stopTokenIds = request.stop.stopTokenIds;
    if (request.stop.ignoreEos !== undefined) assemblerOptions.ignoreEos = request.stop.ignoreEos;
    if (options.skipSpecialTokens !== undefined) assemblerOptions.skipSpecialTokens = options.skipSpecialTokens;
    return new ResponseAssembler(assemblerOptions);
  }

  get finished(): boolean {
    return this.#finishReason !== undefined;
  }

  get finishReason(): FinishReason | undefined {
    return this.#finishReason;
  }

  /** Tokens consumed so far, the one that ended the response included. */
  get completionTokens(): number {
    return this.#completionTokens;
  }

  /** The engine's latest `cachedTokens`. */
  get cachedTokens(): number | undefined {
    return this.#cachedTokens;
  }

  /** Consumes one engine output. After the response has finished, returns `undefined`. */
  push(output: EngineOutput): ResponseChunk | undefined {
    if (this.#finishReason !== undefined) return undefined;
    if (output.cachedTokens !== undefined) this.#cachedTokens = output.cachedTokens;
    const chunk: ResponseChunk = { text: "", tokenIds: [] };
    if (output.cachedTokens !== undefined) chunk.cachedTokens = output.cachedTokens;
    let text = "";
    for (const [index, id] of output.tokenIds.entries()) {
      this.#completionTokens++;
      chunk.tokenIds.push(id);
      const logprob = output.logprobs?.[index];
      if (logprob !== undefined) {
        chunk.logprobs ??= [];
        chunk.logprobs.push(logprob);
      }
      const canStop = this.#completionTokens >= this.#minTokens;
      if (canStop && (this.#eosIds.has(id) || this.#stopIds.has(id))) {
        chunk.stopReason = id;
        return this.#end(chunk, text, "stop");
      }
      const delta = this.#detokenizer.push(id);
      if (canStop) {
        const result = this.#matcher.push(delta);
        text += result.emit;
        if (result.stopped) {
          if (result.stop !== undefined) chunk.stopReason = result.stop;
          chunk.text = text;
          chunk.finishReason = "stop";
          this.#finishReason = "stop";
          return chunk;
        }
      } else {
        // vLLM does not look for stop strings before min_tokens.
        text += delta;
      }
      if (this.#completionTokens >= this.#maxTokens) return this.#end(chunk, text, "length");
    }
    if (output.finishReason !== undefined) {
      if (output.error !== undefined) chunk.error = output.error;
      return this.#end(chunk, text, output.finishReason);
    }
    chunk.text = text;
    return chunk;
  }

  /**
   * Ends the response for a reason from outside the engine stream (the
   * client went away, the stream broke, it ended without a finish reason);
   * flushes held-back text. Returns `undefined` when already finished.
   */
  finish(reason: FinishReason, error?: string): ResponseChunk | undefined {
    if (this.#finishReason !== undefined) return undefined;
    const chunk: ResponseChunk = { text: "", tokenIds: [] };
    if (error !== undefined) chunk.error = error;
    return this.#end(chunk, "", reason);
  }

  #end(chunk: ResponseChunk, text: string, reason: FinishReason): ResponseChunk {
    // Held-back text (a split character, a partial stop string) is real output once nothing can follow.
    const tail = this.#detokenizer.flush();
    const result = this.#matcher.push(tail);
    chunk.text = text + result.emit + this.#matcher.flush();
    if (result.stopped) {
      if (result.stop !== undefined) chunk.stopReason = result.stop;
      reason = "stop";
    }
    chunk.finishReason = reason;
    this.#finishReason = reason;
    return chunk;
  }
}

/**
 * Runs an engine stream through an assembler. Returning early (a stop
 * string, max tokens) ends the `for await` over `outputs`, which cancels the
 * engine's stream upstream. A stream that ends without a finish reason ends
 * the response with `error`; errors thrown by the stream propagate (the
 * caller may migrate the request and keep using the same assembler).
 */
export async function* assembleResponse(
  outputs: AsyncIterable<EngineOutput>,
  assembler: ResponseAssembler,
): AsyncGenerator<ResponseChunk, void, undefined> {
  if (assembler.finished) return;
  for await (const output of outputs) {
    const chunk = assembler.push(output);
    if (chunk !== undefined) yield chunk;
    if (assembler.finished) return;
  }
  const last = assembler.finish("error", "the engine stream ended without a finish reason");
  if (last !== undefined) yield last;
}
