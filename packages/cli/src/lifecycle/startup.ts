import { type Logger, TdistError, withTimeout } from "@tdist/runtime";

interface Step {
  readonly name: string;
  readonly undo: () => Promise<void>;
}

/**
 * What a serving command has started, in order. A startup that fails part
 * way, a stop signal during startup, and the normal shutdown all end the
 * same way: `undo()` stops every started piece, last first, so a process
 * never stays up half-started (systemd and Kubernetes restart on exit).
 */
export class Startup {
  readonly #steps: Step[] = [];
  #undoing: Promise<void> | undefined;

  constructor(
    private readonly logger: Logger,
    /** Fires when the user asked to stop (Ctrl-C, SIGTERM) while starting. */
    readonly signal: AbortSignal,
  ) {}

  /** Records a piece that has started and how to stop it; returns the piece. */
  started<T>(name: string, value: T, stop: (value: T) => Promise<void>): T {
    this.#steps.push({ name, undo: () => stop(value) });
    return value;
  }

  /** Throws `cancelled` when a stop was asked for, so a slow startup ends between steps. */
  checkpoint(): void {
    if (this.signal.aborted) throw new TdistError("cancelled", "stopped while starting");
  }

  /**
   * Stops everything started, last first. A step that fails or takes longer
   * than `stepTimeoutMs` is logged and the rest still run. Idempotent.
   */
  undo(stepTimeoutMs = 30_000): Promise<void> {
    this.#undoing ??= (async () => {
      for (const step of this.#steps.splice(0).reverse()) {
        try {
          await withTimeout(`stopping ${step.name}`, stepTimeoutMs, undefined, step.undo);
        } catch (err) {
          this.logger.warn({ err, step: step.name }, "stopping a started piece failed; continuing");
        }
      }
    })();
    return this.#undoing;
  }
}
