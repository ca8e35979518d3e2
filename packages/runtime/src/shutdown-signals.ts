import type { DistributedRuntime } from "./runtime.js";

export interface SignalHandlerOptions {
  signals?: NodeJS.Signals[];
  /** Called after a clean shutdown; default exits the process with code 0. */
  onStopped?: () => void;
}

/**
 * Wires SIGINT/SIGTERM to a graceful `runtime.shutdown()`; a second signal
 * exits at once with code 1. Returns a function that removes the handlers.
 */
export function shutdownOnSignals(runtime: DistributedRuntime, options: SignalHandlerOptions = {}): () => void {
  const signals = options.signals ?? ["SIGINT", "SIGTERM"];
  const onStopped = options.onStopped ?? (() => process.exit(0));
  let received = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (received) {
      runtime.logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    received = true;
    runtime.logger.info({ signal }, "shutting down gracefully");
    runtime.shutdown().then(onStopped, (err: unknown) => {
      runtime.logger.error({ err }, "shutdown failed");
      process.exit(1);
    });
  };
  for (const signal of signals) process.on(signal, handler);
  return () => {
    for (const signal of signals) process.off(signal, handler);
  };
}
