import { type Logger, TdistError } from "@tdist/runtime";
import type { OpenAIErrorBody } from "../protocol/openai.js";

export interface HttpErrorOptions {
  /** What went wrong inside (a runtime error with its internal addresses): logged, never sent. */
  cause?: unknown;
  /**
   * An expected refusal (no live worker, shed, shutting down, timed out):
   * logged at warn on one line without a stack. Other 5xx are logged at
   * error with theirs.
   */
  routine?: boolean;
}

/** An error with the HTTP status and OpenAI error body it answers with. */
export class HttpError extends Error {
  readonly routine: boolean;

  constructor(
    readonly statusCode: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    options: HttpErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "HttpError";
    this.routine = options.routine ?? false;
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

/**
 * Maps any error to what a client may see. Runtime failures of the path to
 * a worker (no instance, cannot connect, connection lost, timeout, shutting
 * down) carry internal endpoint paths and addresses in their messages: the
 * client gets a message naming `model` and the situation, with the error's
 * code; the original stays in `cause` for the log. Bad input is 400 with its
 * own message (it describes the client's request). Anything else is a 500
 * whose message says only that the server failed.
 */
export function toHttpError(err: unknown, model?: string): HttpError {
  if (err instanceof HttpError) return err;
  const subject = model === undefined ? "the model" : `model ${JSON.stringify(model)}`;
  const unavailable = (status: number, message: string, code: string): HttpError =>
    new HttpError(status, message, status === 504 ? "timeout" : "service_unavailable", null, code, {
      cause: err,
      routine: true,
    });
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
          { cause: err },
        );
      }
      case "no_instances":
        if (err.code === "all_workers_busy") {
          return unavailable(503, `every worker of ${subject} is busy; retry later`, err.code);
        }
        return unavailable(503, `${subject} has no live workers`, err.code);
      case "cannot_connect":
        return unavailable(503, `${subject} has no reachable worker: connecting to it failed`, err.code);
      case "disconnected":
        return unavailable(503, `the connection to the worker serving ${subject} was lost`, err.code);
      case "shutting_down":
        return unavailable(503, `the worker serving ${subject} is shutting down`, err.code);
      case "timeout":
        return unavailable(504, `the worker serving ${subject} did not answer in time`, err.code);
      default:
        return new HttpError(500, `internal error while serving ${subject}`, "internal_server_error", null, err.code, {
          cause: err,
        });
    }
  }
  return new HttpError(500, `internal error while serving ${subject}`, "internal_server_error", null, "internal", {
    cause: err,
  });
}

/**
 * Logs an error a client was answered with: routine refusals at warn on one
 * line (the internal detail as a field, no stack), other 5xx at error with
 * the stack of what went wrong, 4xx not at all (the client was told).
 */
export function logHttpError(logger: Logger, error: HttpError, model?: string): void {
  if (error.statusCode < 500) return;
  const cause = error.cause;
  const fields = { ...(model === undefined ? {} : { model }), status: error.statusCode, code: error.code };
  if (error.routine) {
    const detail = cause instanceof Error ? cause.message : undefined;
    logger.warn({ ...fields, ...(detail === undefined ? {} : { detail }) }, error.message);
  } else {
    logger.error({ ...fields, err: cause ?? error }, error.message);
  }
}
