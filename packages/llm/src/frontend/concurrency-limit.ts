import { TdistError } from "@tdist/runtime";
import { HttpError } from "./openai-errors.js";

/** What `Retry-After` tells a refused client: a slot frees as soon as any request ends. */
export const RETRY_AFTER_SECONDS = 1;

/**
 * A cap on the requests a frontend runs at once. Over it a request is
 * refused at once (429) instead of queued: a queue in front of the engines
 * only hides the overload from the client and from a load balancer that
 * could send it elsewhere.
 */
export class ConcurrencyLimit {
  #active = 0;

  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) {
      throw new TdistError("invalid_option", `maxConcurrentRequests must be an integer >= 1, got ${String(max)}`);
    }
  }

  get active(): number {
    return this.#active;
  }

  /** A release function (idempotent) when there is room, else undefined. */
  tryEnter(): (() => void) | undefined {
    if (this.#active >= this.max) return undefined;
    this.#active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active--;
    };
  }

  /** The 429 a request over the cap gets (send it with `Retry-After`). */
  refusal(): HttpError {
    return new HttpError(
      429,
      `the server is running its limit of ${this.max} concurrent requests; retry later`,
      "rate_limit_exceeded",
      null,
      "too_many_requests",
    );
  }
}
