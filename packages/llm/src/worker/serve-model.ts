import { createHash } from "node:crypto";
import type { DistributedRuntime, Handler, ServedEndpoint } from "@tdist/runtime";
import { type ModelCard, modelCardKey, type TokenizerSource } from "../model-card/model-card.js";
import { componentForRole } from "../protocol/disaggregation.js";
import type { EngineOutput } from "../protocol/engine-output.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";

export const TOKENIZER_ENDPOINT = "tokenizer";
// Small enough for NATS (1 MiB max payload by default) even at 4 UTF-8 bytes a character plus JSON escaping.
const TOKENIZER_CHUNK_CHARS = 128 * 1024;

export interface ServeModelOptions {
  namespace: string;
  /** Default: `prefill` for a card whose role is prefill, else `backend`. */
  component?: string;
  endpoint?: string;
  /** The card without its tokenizer source; `serveModel` fills that in. */
  card: Omit<ModelCard, "tokenizer">;
  /** tokenizer.json contents. */
  tokenizerJson: string;
  engine: Handler<PreprocessedRequest, EngineOutput>;
  /** Tokenizers up to this size travel inside the card; larger ones are served by the worker. */
  inlineTokenizerMaxBytes?: number;
}

export interface ServedModel {
  readonly instanceId: string;
  readonly card: ModelCard;
  readonly generate: ServedEndpoint;
  /** Removes the card, then stops the generate endpoint (draining it). */
  stop(options?: { graceMs?: number }): Promise<void>;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/**
 * Serves an engine as a model worker: the `generate` endpoint, the tokenizer
 * (inline in the card or from a `tokenizer` endpoint, verified by sha256 on
 * the frontend), and the model card under the runtime's lease, so the model
 * appears on every frontend and vanishes with the worker.
 */
export async function serveModel(runtime: DistributedRuntime, options: ServeModelOptions): Promise<ServedModel> {
  // Prefill workers register apart (`prefill`), so frontends route to them only for remote prefills.
  const componentName = options.component ?? componentForRole(options.card.role ?? "aggregated");
  const endpointName = options.endpoint ?? "generate";
  const component = runtime.namespace(options.namespace).component(componentName);
  const sha256 = sha256Hex(options.tokenizerJson);
  const inline = Buffer.byteLength(options.tokenizerJson) <= (options.inlineTokenizerMaxBytes ?? 256 * 1024);
  let source: TokenizerSource;
  let tokenizerServed: ServedEndpoint | undefined;
  if (inline) {
    source = { kind: "inline", tokenizerJson: options.tokenizerJson };
  } else {
    const json = options.tokenizerJson;
    tokenizerServed = await component.endpoint(TOKENIZER_ENDPOINT).serve(async function* (request: {
      sha256?: string;
    }) {
      if (request?.sha256 !== undefined && request.sha256 !== sha256) {
        throw new Error(`this worker serves tokenizer ${sha256}, not ${String(request.sha256)}`);
      }
      for (let at = 0; at < json.length; at += TOKENIZER_CHUNK_CHARS) yield json.slice(at, at + TOKENIZER_CHUNK_CHARS);
    });
    source = { kind: "endpoint", namespace: options.namespace, component: componentName, endpoint: TOKENIZER_ENDPOINT };
  }
  const generate = await component.endpoint(endpointName).serve(options.engine);
  const card: ModelCard = { ...options.card, tokenizer: { source, sha256 } };
  const key = modelCardKey(options.namespace, componentName, endpointName, generate.instanceId);
  await runtime.registerLeasedKey(key, JSON.stringify(card));
  return {
    instanceId: generate.instanceId,
    card,
    generate,
    async stop(stopOptions) {
      await runtime.unregisterLeasedKey(key);
      await generate.stop(stopOptions);
      await tokenizerServed?.stop(stopOptions);
    },
  };
}
