export interface StopMatchResult {
  /** Text that is safe to send now. */
  emit: string;
  /** A stop string matched: nothing after `emit` will ever be emitted. */
  stopped: boolean;
  /** The stop string that matched. */
  stop?: string;
}

/**
 * Finds stop strings in streamed text. Text that may still turn out to be
 * the start of a stop string is held back until it cannot; on a match, only
 * the text before the stop string is emitted (the stop string itself never
 * is, as in OpenAI and vLLM's default).
 *
 * ```ts
 * const matcher = new StopStringMatcher(["\nUser:"]);
 * matcher.push("Hello\nUs");  // { emit: "Hello", stopped: false }  ("\nUs" held)
 * matcher.push("er: hi");     // { emit: "", stopped: true, stop: "\nUser:" }
 * ```
 *
 * When several stop strings match, the one starting earliest wins (the
 * longest on a tie). Each push costs O((held + delta) × stop strings ×
 * longest stop), independent of the text so far; at most
 * `longest stop − 1` characters are ever held.
 */
export class StopStringMatcher {
  readonly stops: readonly string[];
  readonly #maxLength: number;
  #held = "";
  #stopped: string | undefined;

  /** Empty strings are ignored. */
  constructor(stops: Iterable<string>) {
    this.stops = [...new Set([...stops].filter((stop) => stop.length > 0))];
    this.#maxLength = Math.max(0, ...this.stops.map((stop) => stop.length));
  }

  get stopped(): boolean {
    return this.#stopped !== undefined;
  }

  /** Text held back because it may start a stop string. */
  get held(): string {
    return this.#held;
  }

  push(delta: string): StopMatchResult {
    if (this.#stopped !== undefined) return { emit: "", stopped: true, stop: this.#stopped };
    if (this.stops.length === 0) return { emit: delta, stopped: false };
    const text = this.#held + delta;
    let matchAt = -1;
    let match: string | undefined;
    for (const stop of this.stops) {
      // A match lying wholly inside the held text would have been found earlier.
      const from = Math.max(0, this.#held.length - stop.length + 1);
      const at = text.indexOf(stop, from);
      if (at >= 0 && (matchAt < 0 || at < matchAt || (at === matchAt && stop.length > (match?.length ?? 0)))) {
        matchAt = at;
        match = stop;
      }
    }
    if (match !== undefined) {
      this.#stopped = match;
      this.#held = "";
      return { emit: text.slice(0, matchAt), stopped: true, stop: match };
    }
    const keep = this.#partialMatchLength(text);
    this.#held = text.slice(text.length - keep);
    return { emit: text.slice(0, text.length - keep), stopped: false };
  }

  /** End of text: returns what was held back (nothing after a stop). */
  flush(): string {
    const held = this.#held;
    this.#held = "";
    return this.#stopped === undefined ? held : "";
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  #partialMatchLength(text: string): number {
    const longest = Math.min(text.length, this.#maxLength - 1);
    for (let length = longest; length > 0; length--) {
      const suffix = text.slice(text.length - length);
      if (this.stops.some((stop) => stop.length > length && stop.startsWith(suffix))) return length;
    }
    return 0;
  }
}
