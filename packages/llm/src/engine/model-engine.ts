import type { Context } from "@tdist/runtime";
import type { ModelCapability, ModelCard } from "../model-card/model-card.js";
import type { WorkerRole } from "../protocol/disaggregation.js";
import type { EmbedRequest, EmbedResponse } from "../protocol/embeddings.js";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";

/**
 * The one interface every engine (echo, mocker, llama.cpp, and whatever a
 * user plugs in) implements, so that one `serveEngineWorker` serves any of
 * them and one conformance suite holds them all to the same contract.
 *
 * Contract (checked by the engine conformance suite):
 * - `generate` receives a request the shared parser has already validated
 *   (`parsePreprocessedRequest`): engines do not re-validate the wire shape,
 *   only what is specific to them (vocabulary size, context length), which
 *   they refuse by throwing a `bad_request` TdistError before the first
 *   output.
 * - The stream yields `EngineOutput`s; the last carries `finishReason`
 *   (`length` at `stop.maxTokens`, `stop` on eos / stop ids once
 *   `stop.minTokens` are out, `cancelled` after `ctx.stopGenerating()`, or
 *   `error` with an `errorCode`). Nothing follows a finish reason.
 * - A kill (`ctx.signal`) ends the stream promptly with nothing more sent;
 *   a consumer's `break` releases the sequence.
 * - A request that needs a capability the engine lacks (`guided`,
 *   `output.promptLogprobs`) is refused with `bad_request` naming it.
 * - `close()` ends in-flight streams (`engine_shutting_down`) and frees
 *   what the engine holds; it is idempotent.
 */
export interface ModelEngine {
  /** Engine kind for the card and status output (`echo`, `mocker`, `llamacpp`, ...). */
  readonly kind: string;
  /** What it can do beyond plain generation; also written into its card. */
  readonly capabilities: readonly ModelCapability[];
  /** The card this engine's worker registers, without the tokenizer source (the worker fills it in). */
  card(options: { name: string; role?: WorkerRole }): Omit<ModelCard, "tokenizer">;
  generate(request: PreprocessedRequest, ctx: Context): AsyncIterable<EngineOutput>;
  /** Embeddings, when `capabilities` has `embeddings`: served on the worker's `embed` endpoint. */
  embed?(request: EmbedRequest, ctx: Context): Promise<EmbedResponse>;
  /** Re-publishes the engine's KV state as events (a router asked to resync), when it publishes KV events. */
  resyncKvEvents?(): Promise<void>;
  close(): Promise<void>;
}
