/**
 * The logging seam. Libraries take a logger; they do not own one. The CLI
 * passes a pino logger, which satisfies this interface as it is.
 */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: object): Logger;
}

const noop = (): void => {};

/** A logger that drops everything: the default inside libraries. */
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
