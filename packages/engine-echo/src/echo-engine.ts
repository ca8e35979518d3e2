import type { EngineOutput, FinishReason, PreprocessedRequest } from "@tdist/llm";
import { type Context, delay, TdistError } from "@tdist/runtime";

export interface EchoEngineOptions {
  /** Pause before each token, in ms (0 = none). Default 0. */
  delayMsPerToken?: number;
}

/** An engine handler: what a worker serves on its `generate` endpoint. */
export type EchoEngineHandler = (request: PreprocessedRequest, ctx: Context) => AsyncGenerator<EngineOutput>;

function resolveOptions(options: EchoEngineOptions): Required<EchoEngineOptions> {
  const delayMsPerToken = options.delayMsPerToken ?? 0;
  if (!Number.isFinite(delayMsPerToken) || delayMsPerToken < 0) {
    throw new TdistError(
      "invalid_option",
      `delayMsPerToken must be a finite number >= 0, got ${String(options.delayMsPerToken)}`,
    );
  }
  return { delayMsPerToken };
}

function validateRequest(request: PreprocessedRequest): void {
  if (!Array.isArray(request?.tokenIds)) throw new TdistError("bad_request", "tokenIds must be an array");
  const maxTokens = request.stop?.maxTokens;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) {
    throw new TdistError("bad_request", `stop.maxTokens must be an integer >= 0, got ${String(maxTokens)}`);
  }
}

/**
 * The echo engine: streams the prompt's token ids back, one per message, as
 * if the model generated them. For tests of everything around an engine.
 *
 * Ends with `finishReason`:
 * - `"length"` after `stop.maxTokens` tokens;
 * - `"stop"` on an eos id (unless `ignoreEos`) or a `stopTokenIds` id, once
 *   at least `minTokens` tokens were produced (the stop token is included), or
 *   after the whole prompt was echoed;
 * - `"cancelled"` (a final empty message) when the request is stopped
 *   gracefully (`ctx.stopGenerating()`).
 *
 * A kill (`ctx.signal`) ends the stream at once with nothing more sent.
 *
 * ```ts
 * await endpoint.serve(createEchoEngine({ delayMsPerToken: 5 }));
 * ```
 */
export function createEchoEngine(options: EchoEngineOptions = {}): EchoEngineHandler {
  const { delayMsPerToken } = resolveOptions(options);

  return async function* echo(request: PreprocessedRequest, ctx: Context): AsyncGenerator<EngineOutput> {
    validateRequest(request);
    const { tokenIds, stop } = request;
    const minTokens = stop.minTokens ?? 0;
    const stopIds = new Set(stop.stopTokenIds ?? []);
    if (!stop.ignoreEos) for (const id of request.eosTokenIds ?? []) stopIds.add(id);

    const limit = Math.min(stop.maxTokens, tokenIds.length);
    if (limit === 0) {
      yield { tokenIds: [], finishReason: stop.maxTokens === 0 ? "length" : "stop" };
      return;
    }
    for (let i = 0; i < limit; i++) {
      if (delayMsPerToken > 0) {
        try {
          // The stop signal also aborts on kill, so either ends the wait early.
          await delay(delayMsPerToken, ctx.stopSignal);
        } catch {
          // Swallowed on purpose: the context below says which cancellation it was.
        }
      }
      if (ctx.isKilled) return;
      if (ctx.isStopped) {
        yield { tokenIds: [], finishReason: "cancelled" };
        return;
      }
      const token = tokenIds[i] as number;
      const produced = i + 1;
      let finishReason: FinishReason | undefined;
      if (stopIds.has(token) && produced >= minTokens) finishReason = "stop";
      else if (produced === stop.maxTokens) finishReason = "length";
      else if (produced === tokenIds.length) finishReason = "stop";
      yield finishReason === undefined ? { tokenIds: [token] } : { tokenIds: [token], finishReason };
      if (finishReason !== undefined) return;
    }
  };
}
