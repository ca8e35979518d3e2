import { TdistError } from "@tdist/runtime";

/**
 * A `bad_request` caused by one request field, named in `param` the way
 * OpenAI error bodies name it (`messages`, `max_tokens`, `prompt`, ...).
 * It is a TdistError, so code that only knows TdistError still answers 400.
 * `openaiCode` is set when OpenAI has a code for the case
 * (`context_length_exceeded`).
 */
export class RequestParamError extends TdistError {
  readonly param: string;
  readonly openaiCode: string | undefined;

  constructor(param: string, message: string, options: { cause?: unknown; openaiCode?: string } = {}) {
    super("bad_request", message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RequestParamError";
    this.param = param;
    this.openaiCode = options.openaiCode;
  }
}
