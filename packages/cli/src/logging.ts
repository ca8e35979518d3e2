import type { Logger } from "@tdist/runtime";
import pino from "pino";

/** The process logger: pino JSON lines on stderr, so stdout stays for command output. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2)) as unknown as Logger;
}
