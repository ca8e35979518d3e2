import { categoryOf, type ErrorCategory, type ErrorCode, isErrorCode } from "./error-codes.js";

/** The shape an error takes on the wire: `{ code, category, message }`. */
export interface WireError {
  code: string;
  category: string;
  message: string;
}

/**
 * The one base class of every error the runtime raises.
 *
 * ```ts
 * try { ... } catch (err) {
 *   if (TdistError.is(err, "no_instances")) retryLater();
 * }
 * ```
 */
export class TdistError extends Error {
  readonly code: ErrorCode;
  readonly category: ErrorCategory;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TdistError";
    this.code = code;
    this.category = categoryOf(code);
  }

  /** True when `err` is a TdistError, optionally with the given code. */
  static is(err: unknown, code?: ErrorCode): err is TdistError {
    return err instanceof TdistError && (code === undefined || err.code === code);
  }

  /** True when `err` is a TdistError of the given category. */
  static inCategory(err: unknown, category: ErrorCategory): err is TdistError {
    return err instanceof TdistError && err.category === category;
  }

  toWire(): WireError {
    return { code: this.code, category: this.category, message: this.message };
  }

  /** Rebuilds a typed error from its wire form; unknown codes become `internal`. */
  static fromWire(wire: unknown): TdistError {
    if (typeof wire !== "object" || wire === null) {
      return new TdistError("protocol_error", "malformed error frame");
    }
    const { code, message } = wire as Partial<WireError>;
    const text = typeof message === "string" ? message : "remote error";
    if (isErrorCode(code)) return new TdistError(code, text);
    return new TdistError("internal", `${String(code)}: ${text}`);
  }

  /** Wraps anything thrown into a TdistError, keeping TdistErrors as they are. */
  static wrap(err: unknown, code: ErrorCode, prefix?: string): TdistError {
    if (err instanceof TdistError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new TdistError(code, prefix ? `${prefix}: ${message}` : message, { cause: err });
  }
}
