/**
 * Deterministic pseudo-random output tokens: the same seed gives the same
 * stream of ids on every run and machine (mulberry32, a 32-bit generator).
 * The mocker has no model, so "sampling" is only this.
 */
export class TokenSampler {
  private state: number;

  constructor(
    seed: number,
    private readonly vocabSize: number,
    private readonly excluded: ReadonlySet<number>,
  ) {
    this.state = seed >>> 0;
  }

  /** The seed a request gets: `sampling.seed` when set, else a hash of its prompt. */
  static seedFor(seed: number | undefined, promptTokens: readonly number[]): number {
    if (seed !== undefined && Number.isFinite(seed)) return Math.trunc(seed) >>> 0;
    // FNV-1a over the token ids: cheap, and identical prompts get identical output.
    let hash = 0x811c9dc5;
    for (const token of promptTokens) {
      hash = Math.imul(hash ^ (token >>> 0), 0x01000193) >>> 0;
    }
    return hash;
  }

  /** The next id in `[0, vocabSize)`, skipping excluded ids (eos). */
  next(): number {
    let token = Math.floor(this.random() * this.vocabSize);
    // Linear probe past excluded ids; the caller guarantees at least one id is allowed.
    while (this.excluded.has(token)) token = (token + 1) % this.vocabSize;
    return token;
  }

  private random(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}
