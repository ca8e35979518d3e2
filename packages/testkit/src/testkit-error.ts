/**
 * Why a test server could not be started or used. Tests branch on `code`,
 * never on message text.
 */
export type TestkitErrorCode =
  /** The server binary is not on PATH; the message names the Debian package to install. */
  | "server_not_installed"
  /** The server exited, or did not become ready within the startup timeout. */
  | "server_start_failed"
  /** The server was stopped for good; it cannot be restarted. */
  | "server_stopped"
  /** openssl could not make the test certificates asked for. */
  | "certificate_failed";

export class TestkitError extends Error {
  readonly code: TestkitErrorCode;

  constructor(code: TestkitErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TestkitError";
    this.code = code;
  }

  /** True when `err` is a TestkitError, optionally with the given code. */
  static is(err: unknown, code?: TestkitErrorCode): err is TestkitError {
    return err instanceof TestkitError && (code === undefined || err.code === code);
  }
}
