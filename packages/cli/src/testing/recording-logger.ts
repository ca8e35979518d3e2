import type { Logger } from "@tdist/runtime";

/** A logger that appends every line, as JSON with its bindings, to `lines`: what a secret scan reads. */
export function recordingLogger(lines: string[], bindings: object = {}): Logger {
  const record =
    (level: string) =>
    (obj: object, msg?: string): void => {
      lines.push(JSON.stringify({ level, ...bindings, ...obj, msg }));
    };
  return {
    debug: record("debug"),
    info: record("info"),
    warn: record("warn"),
    error: record("error"),
    child: (more) => recordingLogger(lines, { ...bindings, ...more }),
  };
}
