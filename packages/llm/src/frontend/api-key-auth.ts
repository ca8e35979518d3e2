import { createHash, timingSafeEqual } from "node:crypto";
import { TdistError } from "@tdist/runtime";
import { HttpError } from "./openai-errors.js";

/** Why a request was refused, for the log and the rejected-requests metric. */
export type ApiKeyRefusal = "missing_api_key" | "invalid_api_key";

/**
 * Checks `Authorization: Bearer <key>` (what OpenAI clients send) against a
 * set of keys. Keys are held as SHA-256 digests and compared with
 * `timingSafeEqual` on equal-length digests, every key every time, so the
 * time taken says nothing about how much of a key was right or which key
 * was near.
 */
export class ApiKeyAuth {
  readonly #digests: readonly Buffer[];

  constructor(keys: readonly string[]) {
    if (keys.length === 0) throw new TdistError("invalid_option", "apiKeys: give at least one key, or leave it unset");
    keys.forEach((key, index) => {
      // A key that cannot travel in a Bearer header would lock every client out.
      if (typeof key !== "string" || !/^[\x21-\x7e]+$/.test(key)) {
        throw new TdistError(
          "invalid_option",
          `apiKeys[${index}]: a key must be non-empty printable ASCII without spaces (it travels in an Authorization header)`,
        );
      }
    });
    this.#digests = keys.map(digest);
  }

  /** Undefined when the header carries one of the keys; otherwise why not. */
  check(authorization: string | undefined): ApiKeyRefusal | undefined {
    const presented = bearerToken(authorization);
    if (presented === undefined) return "missing_api_key";
    const candidate = digest(presented);
    let matched = false;
    for (const known of this.#digests) matched = timingSafeEqual(candidate, known) || matched;
    return matched ? undefined : "invalid_api_key";
  }
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}

function bearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  const match = /^\s*bearer\s+(\S+)\s*$/i.exec(authorization);
  return match?.[1];
}

/**
 * The 401 a refused request gets: OpenAI's body and code (`invalid_api_key`
 * for a missing key too, as OpenAI answers). The presented key is never
 * echoed, not even in part.
 */
export function unauthorizedError(refusal: ApiKeyRefusal): HttpError {
  const message =
    refusal === "missing_api_key"
      ? "You didn't provide an API key. Send it as an Authorization: Bearer header."
      : "Incorrect API key provided.";
  return new HttpError(401, message, "invalid_request_error", null, "invalid_api_key");
}
