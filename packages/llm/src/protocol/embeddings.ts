/** The endpoint an embedding-capable worker serves next to `generate`. */
export const EMBED_ENDPOINT = "embed";

/**
 * What the frontend sends to a worker's `embed` endpoint: already tokenized
 * inputs (one embedding each), so the worker needs no tokenizer round trip.
 */
export interface EmbedRequest {
  /** Served model name. */
  model: string;
  /** One token id array per input; none empty, none longer than the model's context. */
  inputs: number[][];
}

/** The `embed` endpoint's one response: one vector per input, in order. */
export interface EmbedResponse {
  /** L2-normalised vectors (as OpenAI's are), each of the model's embedding size. */
  embeddings: number[][];
  /** Tokens the engine evaluated (what `usage.prompt_tokens` counts). */
  promptTokens: number;
}
