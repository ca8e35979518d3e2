import { TdistError } from "@tdist/runtime";

/** OpenAI's `logit_bias` bounds: at -100 a token is banned, at 100 it is forced. */
export const LOGIT_BIAS_LIMIT = 100;

/**
 * `sampling.logitBias` checked against a vocabulary, by every engine that samples: keys are decimal token
 * ids in `[0, vocabSize)`, values finite numbers in [-100, 100].
 */
export function parseLogitBias(value: unknown, vocabSize: number): Map<number, number> {
  const biases = new Map<number, number>();
  if (value === undefined || value === null) return biases;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new TdistError("bad_request", "sampling.logitBias must be an object of token id to bias");
  }
  for (const [key, bias] of Object.entries(value as Record<string, unknown>)) {
    const id = /^\d+$/.test(key) ? Number(key) : Number.NaN;
    if (!Number.isSafeInteger(id) || id >= vocabSize) {
      throw new TdistError(
        "bad_request",
        `sampling.logitBias key ${JSON.stringify(key)} is not a token id of this model (0..${vocabSize - 1})`,
      );
    }
    if (typeof bias !== "number" || !Number.isFinite(bias) || Math.abs(bias) > LOGIT_BIAS_LIMIT) {
      throw new TdistError(
        "bad_request",
        `sampling.logitBias[${key}] must be a number in [-${LOGIT_BIAS_LIMIT}, ${LOGIT_BIAS_LIMIT}], got ${String(bias)}`,
      );
    }
    if (bias !== 0) biases.set(id, bias);
  }
  return biases;
}
