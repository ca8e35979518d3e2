import type { Logger } from "@tdist/runtime";
import pino from "pino";
import pretty from "pino-pretty";

export interface LoggerSettings {
  level: string;
  /** `auto`: pretty on a terminal, JSON lines otherwise (files, journald, log shippers). */
  format: "auto" | "pretty" | "json";
  /** Where lines go; default stderr, so stdout stays for command output. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
}

/**
 * The process logger. Each JSON line carries `pid` once (pino's own base,
 * without `hostname`); runtimes, workers and engines add their name through
 * child loggers (`{ runtime: "worker-1" }`).
 */
export function createLogger(settings: LoggerSettings): Logger {
  const stream = settings.stream ?? process.stderr;
  const usePretty = settings.format === "pretty" || (settings.format === "auto" && stream.isTTY === true);
  const options = { level: settings.level, base: { pid: process.pid } };
  if (usePretty) {
    const destination = pretty({
      destination: stream === process.stderr ? 2 : stream,
      colorize: stream.isTTY === true,
      sync: true,
      translateTime: "SYS:HH:MM:ss.l",
      ignore: "pid,hostname",
      singleLine: true,
    });
    return pino(options, destination) as unknown as Logger;
  }
  const destination = stream === process.stderr ? pino.destination(2) : stream;
  return pino(options, destination) as unknown as Logger;
}
