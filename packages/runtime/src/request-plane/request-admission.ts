import { Context } from "../context.js";
import { TdistError } from "../errors/tdist-error.js";
import type { Codec } from "./codec.js";
import type { RequestHead } from "./frame.js";
import type { ServedHandler } from "./request-plane.js";

/** A request a server has accepted: its handler, decoded body and context. */
export interface AdmittedRequest {
  entry: ServedHandler;
  request: unknown;
  ctx: Context;
}

/**
 * What every request-plane server does with a decoded REQUEST before running
 * it: find the endpoint, decode the body, make the handler's context. Returns
 * the typed error to send back instead when it cannot.
 */
export function admitRequest(
  head: RequestHead,
  lookup: (path: string) => ServedHandler | undefined,
  codec: Codec,
): AdmittedRequest | TdistError {
  const entry = lookup(head.path);
  if (entry === undefined) return new TdistError("endpoint_not_found", `endpoint ${head.path} is not served here`);
  let request: unknown;
  try {
    request = codec.decode(head.body);
  } catch (err) {
    return TdistError.wrap(err, "codec_error");
  }
  const ctx = new Context({ requestId: head.headers.requestId, annotations: head.headers.annotations ?? {} });
  return { entry, request, ctx };
}
