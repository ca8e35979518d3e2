import { TdistError } from "../errors/tdist-error.js";

/**
 * Encodes an event or work item payload as JSON text, the one wire format of
 * both planes. Throws `codec_error` naming `what` when JSON cannot encode it
 * (`undefined`, a function, a BigInt, a cycle).
 */
export function encodeJson(what: string, payload: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(payload);
  } catch (err) {
    throw new TdistError("codec_error", `payload for ${what} is not JSON-serialisable: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (text === undefined) {
    throw new TdistError("codec_error", `payload for ${what} is not JSON-serialisable (${typeof payload})`);
  }
  return text;
}

/** Decodes JSON text; throws `codec_error` naming `what` on malformed input. */
export function decodeJson<T>(what: string, text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new TdistError("codec_error", `payload on ${what} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
