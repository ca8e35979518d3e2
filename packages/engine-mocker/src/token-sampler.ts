import { randomBytes } from "node:crypto";
import { LOGIT_BIAS_LIMIT } from "@tdist/llm";
import { TdistError } from "@tdist/runtime";

export interface TokenSamplerOptions {
  seed: number;
  vocabSize: number;
  /** Ids never drawn, whatever their bias (eos: the mocker ends by length or a stop id). */
  excluded: ReadonlySet<number>;
  /** From `parseLogitBias`. */
  logitBias?: ReadonlyMap<number, number>;
  /**
   * Greedy decoding: every draw is seeded by the FNV-1a hash of these tokens
   * and of the ones drawn since (`seed` is then unused), so the next token is
   * a function of the whole sequence so far, as a real model's greedy token
   * is. A continuation whose prompt is this prompt plus the tokens drawn so
   * far (a migrated request) draws exactly what this one would have.
   */
  greedyContext?: readonly number[];
}

/**
 * Pseudo-random output tokens: the same seed gives the same stream of ids on
 * every run and machine (mulberry32, a 32-bit generator). The mocker has no
 * model, so "sampling" is only this: as if every token had the same logit,
 * each id is drawn with weight 1, and a `logitBias` of `b` gives its token
 * weight `e^b` instead (the bias added to that common logit). A bias of -100
 * bans the token; tokens at 100 are the only candidates, drawn evenly.
 * Temperature does not change the weights (all logits but the biased ones
 * are equal).
 */
export class TokenSampler {
  #state: number;
  readonly #vocabSize: number;
  /** Ids the uniform draw skips: excluded, or drawn by their own weight. */
  readonly #skipped: ReadonlySet<number>;
  /** Biased ids with their weights, drawn before the uniform mass. */
  readonly #weighted: { id: number; weight: number }[] = [];
  readonly #weightedTotal: number;
  /** How many ids share the uniform mass (weight 1 each). */
  readonly #uniformCount: number;
  /** With `greedyContext`: the running hash of the sequence so far. */
  #context: number | undefined;

  constructor(options: TokenSamplerOptions) {
    const { vocabSize, excluded } = options;
    const biases = options.logitBias ?? new Map<number, number>();
    this.#state = options.seed >>> 0;
    this.#context = options.greedyContext === undefined ? undefined : fnv1a(FNV_OFFSET, options.greedyContext);
    this.#vocabSize = vocabSize;
    const skipped = new Set(excluded);
    const forced: number[] = [];
    for (const [id, bias] of biases) {
      skipped.add(id);
      if (excluded.has(id) || bias <= -LOGIT_BIAS_LIMIT) continue;
      if (bias >= LOGIT_BIAS_LIMIT) forced.push(id);
      else this.#weighted.push({ id, weight: Math.exp(bias) });
    }
    let uniformCount = vocabSize;
    for (const id of skipped) if (id >= 0 && id < vocabSize) uniformCount--;
    if (forced.length > 0) {
      this.#weighted = forced.map((id) => ({ id, weight: 1 }));
      uniformCount = 0;
    }
    this.#skipped = skipped;
    this.#uniformCount = uniformCount;
    this.#weightedTotal = this.#weighted.reduce((sum, entry) => sum + entry.weight, 0);
    if (this.#weightedTotal + uniformCount <= 0) {
      throw new TdistError(
        "bad_request",
        "every token id of the vocabulary is an eos id or banned by sampling.logitBias",
      );
    }
  }

  /**
   * The seed a request gets: `sampling.seed` when set; at temperature 0
   * (greedy, deterministic by definition) a hash of its prompt; otherwise a
   * fresh random one, so concurrent requests and `n` choices differ.
   */
  static seedFor(seed: number | undefined, temperature: number | undefined, promptTokens: readonly number[]): number {
    if (seed !== undefined && seed !== null && Number.isFinite(seed)) return Math.trunc(seed) >>> 0;
    if (temperature !== 0) return randomBytes(4).readUInt32LE(0);
    // FNV-1a over the token ids: cheap, and identical prompts get identical output.
    return fnv1a(FNV_OFFSET, promptTokens);
  }

  /** The next id in `[0, vocabSize)`, never an excluded or banned one. */
  next(): number {
    if (this.#context === undefined) return this.#draw();
    this.#state = this.#context;
    const token = this.#draw();
    this.#context = fnv1a(this.#context, [token]);
    return token;
  }

  #draw(): number {
    let draw = this.#random() * (this.#weightedTotal + this.#uniformCount);
    if (draw < this.#weightedTotal) {
      for (const entry of this.#weighted) {
        draw -= entry.weight;
        if (draw < 0) return entry.id;
      }
      return (this.#weighted.at(-1) as { id: number }).id;
    }
    // Without biases this is `floor(random * vocabSize)`, as before biases existed.
    let token = Math.min(
      this.#vocabSize - 1,
      Math.floor(((draw - this.#weightedTotal) / this.#uniformCount) * this.#vocabSize),
    );
    // Linear probe past skipped ids; the constructor checked that one is left.
    while (this.#skipped.has(token)) token = (token + 1) % this.#vocabSize;
    return token;
  }

  #random(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

const FNV_OFFSET = 0x811c9dc5;

function fnv1a(start: number, tokens: readonly number[]): number {
  let hash = start;
  for (const token of tokens) hash = Math.imul(hash ^ (token >>> 0), 0x01000193) >>> 0;
  return hash;
}
