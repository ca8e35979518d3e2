import { TdistError } from "@tdist/runtime";
import type { OpenAIErrorBody } from "../protocol/openai.js";

/** An error with the HTTP status and OpenAI error body it answers with. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = "HttpError";
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  static badRequest(message: string, param: string | null = null, code: string | null = null): HttpError {
    return new HttpError(400, message, "invalid_request_error", param, code);
  }

  static modelNotFound(model: string): HttpError {
    return new HttpError(
      404,
      `The model \`${model}\` does not exist.`,
      "invalid_request_error",
      "model",
      "model_not_found",
    );
  }
}

/** Maps runtime errors to HTTP: no live worker is 503, bad input 400, the rest 500. */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof TdistError) {
    switch (err.category) {
      case "bad_request": {
        // Preprocessor errors name the offending parameter (`param`) and OpenAI's code for it.
        const detail = err as TdistError & { param?: string; openaiCode?: string };
        return new HttpError(
          400,
          err.message,
          "invalid_request_error",
          detail.param ?? null,
          detail.openaiCode ?? err.code,
        );
      }
      case "no_instances":
      case "cannot_connect":
      case "shutting_down":
        return new HttpError(503, err.message, "service_unavailable", null, err.code);
      case "timeout":
        return new HttpError(504, err.message, "timeout", null, err.code);
      default:
        return new HttpError(500, err.message, "internal_server_error", null, err.code);
    }
  }
  return new HttpError(500, err instanceof Error ? err.message : String(err), "internal_server_error");
}
