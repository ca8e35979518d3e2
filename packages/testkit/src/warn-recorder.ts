import type { Logger } from "@tdist/runtime";

/** One warning a {@link warnRecorder} kept. */
export interface WarnLine {
  fields: Record<string, unknown>;
  message: string | undefined;
}

/** A logger that keeps its warnings in `lines` and drops everything else: for "warned once, counted" checks. */
export function warnRecorder(lines: WarnLine[]): Logger {
  const ignore = (): void => {};
  const logger: Logger = {
    debug: ignore,
    info: ignore,
    warn: (fields: object, message?: string) => lines.push({ fields: fields as Record<string, unknown>, message }),
    error: ignore,
    child: () => logger,
  };
  return logger;
}
