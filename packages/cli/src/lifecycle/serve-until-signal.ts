import type { Logger } from "@tdist/runtime";
import type { CliIo } from "../cli-io.js";
import { describeError, exitCodeOf } from "./describe-error.js";
import { Startup } from "./startup.js";

/** What a started serving command tells the user when it is asked to stop. */
export interface Serving {
  /** One line saying what shutdown waits for, e.g. "2 requests in flight get up to 10 s to finish". */
  shutdownWaitsFor(): Promise<string>;
}

export interface ServeOptions {
  io: CliIo;
  logger: Logger;
  /** Stops the process at once; the second Ctrl-C calls it. Tests replace it. */
  forceExit?: (code: number) => void;
  /** Signals that stop the command; default SIGINT and SIGTERM. */
  signals?: readonly NodeJS.Signals[];
}

/**
 * Runs a serving command: starts it, keeps it up until SIGINT/SIGTERM, then
 * stops it gracefully; a second signal forces the exit. Any startup failure
 * (a port in use, an unreachable server, a model that does not load) stops
 * what was started and returns a non-zero exit code instead of leaving a
 * live process that serves nothing.
 */
export async function serveUntilSignal(
  options: ServeOptions,
  start: (startup: Startup) => Promise<Serving>,
): Promise<number> {
  const { io, logger } = options;
  const forceExit = options.forceExit ?? ((code: number) => process.exit(code));
  const signals = options.signals ?? (["SIGINT", "SIGTERM"] as const);
  const stopAsked = new AbortController();
  let received = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    received += 1;
    if (received === 1) {
      stopAsked.abort(signal);
      return;
    }
    io.err(`tdist: ${signal} again: stopping now, without waiting`);
    forceExit(130);
  };
  for (const signal of signals) process.on(signal, onSignal);
  const startup = new Startup(logger, stopAsked.signal);
  try {
    let serving: Serving;
    try {
      serving = await start(startup);
      startup.checkpoint();
    } catch (err) {
      if (stopAsked.signal.aborted) {
        io.err("tdist: stopping while starting: shutting down what has started (Ctrl-C again to stop now)");
        await startup.undo();
        return 0;
      }
      io.err(describeError(err));
      logger.debug({ err }, "startup failed");
      await startup.undo();
      return exitCodeOf(err);
    }
    await new Promise<void>((resolve) => stopAsked.signal.addEventListener("abort", () => resolve(), { once: true }));
    io.err(`tdist: shutting down: ${await serving.shutdownWaitsFor()} (Ctrl-C again to stop now)`);
    await startup.undo();
    io.err("tdist: stopped");
    return 0;
  } finally {
    for (const signal of signals) process.off(signal, onSignal);
  }
}
