/** Counts the requests a server is running, so that closing waits exactly as long as they do. */
export class InflightRequests {
  #count = 0;
  readonly #idleWaiters = new Set<() => void>();

  get count(): number {
    return this.#count;
  }

  /** Marks a request as started; call the returned function (once) when it has ended. */
  enter(): () => void {
    this.#count++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.#count--;
      if (this.#count === 0) for (const waiter of [...this.#idleWaiters]) waiter();
    };
  }

  /** Resolves once no request is running (at once when none is). */
  idle(): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = (): void => {
        this.#idleWaiters.delete(waiter);
        resolve();
      };
      this.#idleWaiters.add(waiter);
    });
  }
}
