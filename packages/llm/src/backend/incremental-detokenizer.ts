import type { Tokenizer } from "../preprocessor/tokenizer.js";

export interface IncrementalDetokenizerOptions {
  /** Leave out special tokens (eos, `<|im_start|>`, ...). Default `true`, as vLLM. */
  skipSpecialTokens?: boolean;
  /**
   * `auto` (default) decodes byte-level and byte-fallback vocabularies token
   * by token through a streaming UTF-8 decoder and other tokenizers by
   * windows; `window` forces window decoding.
   */
  mode?: "auto" | "window";
}

/**
 * Turns generated token ids into text as they arrive, without broken UTF-8
 * and without re-decoding the sequence.
 *
 * ```ts
 * const detokenizer = new IncrementalDetokenizer(tokenizer);
 * for (const id of ids) process.stdout.write(detokenizer.push(id));
 * process.stdout.write(detokenizer.flush());
 * ```
 *
 * A character whose UTF-8 bytes are split across tokens (common for CJK and
 * emoji in byte-level BPE, and for sentencepiece `<0xNN>` byte tokens) is
 * emitted by the token that completes it; bytes that can never complete
 * become U+FFFD as soon as that is certain, or at `flush`.
 *
 * Cost per token does not grow with the sequence:
 * - `bytes` strategy (GPT-2/Llama 3/Qwen byte-level BPE, Llama 2/Mistral
 *   byte fallback): each token's bytes are looked up once (memoised) and fed
 *   to one streaming `TextDecoder`;
 * - otherwise, the prefix/read offsets of transformers' and vLLM's
 *   incremental detokenization: decode only the tokens since the previous
 *   emission, and drop everything before them.
 */
export class IncrementalDetokenizer {
  readonly #tokenizer: Tokenizer;
  readonly #skipSpecialTokens: boolean;
  readonly #byteMode: boolean;
  #tokenCount = 0;
  #window = 0;
  #finished = false;
  // bytes mode
  readonly #utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  #leadingSpacesToStrip: number;
  // window mode: ids since the last emission's start; [prefix, read) is what that emission decoded.
  #ids: number[] = [];
  #readOffset = 0;
  #prefixText = "";

  constructor(tokenizer: Tokenizer, options: IncrementalDetokenizerOptions = {}) {
    this.#tokenizer = tokenizer;
    this.#skipSpecialTokens = options.skipSpecialTokens ?? true;
    const strategy = tokenizer.decodeStrategy;
    this.#byteMode = (options.mode ?? "auto") === "auto" && strategy.kind === "bytes";
    this.#leadingSpacesToStrip = strategy.kind === "bytes" ? strategy.stripLeadingSpaces : 0;
  }

  /** Tokens pushed so far (skipped special tokens included). */
  get tokenCount(): number {
    return this.#tokenCount;
  }

  /**
   * Tokens whose text is not fully emitted yet: the work the next `push`
   * may redo. Stays small (a few tokens) whatever the sequence length.
   */
  get window(): number {
    return this.#window;
  }

  /** Adds one token; returns the text it completes (often all of it, sometimes "" while a character is split). */
  push(id: number): string {
    if (this.#finished) throw new Error("IncrementalDetokenizer.push after flush");
    this.#tokenCount++;
    if (this.#skipSpecialTokens && this.#tokenizer.isSpecial(id)) return "";
    return this.#byteMode ? this.#pushBytes(id) : this.#pushWindow(id);
  }

  /** Adds several tokens; returns the text they complete. */
  pushMany(ids: Iterable<number>): string {
    let text = "";
    for (const id of ids) text += this.push(id);
    return text;
  }

  /** Ends the sequence: returns held-back text, an incomplete character as U+FFFD. Later pushes throw. */
  flush(): string {
    if (this.#finished) return "";
    this.#finished = true;
    this.#window = 0;
    if (this.#byteMode) return this.#utf8.decode();
    if (this.#readOffset >= this.#ids.length) return "";
    const text = this.#tokenizer.decode(this.#ids, { skipSpecialTokens: this.#skipSpecialTokens });
    return text.length > this.#prefixText.length ? text.slice(this.#prefixText.length) : "";
  }

  #pushBytes(id: number): string {
    let bytes = this.#tokenizer.tokenBytes(id);
    if (bytes === undefined || bytes.length === 0) {
      this.#window++;
      return "";
    }
    if (this.#leadingSpacesToStrip > 0) {
      let skip = 0;
      while (skip < bytes.length && skip < this.#leadingSpacesToStrip && bytes[skip] === 0x20) skip++;
      this.#leadingSpacesToStrip = skip < bytes.length ? 0 : this.#leadingSpacesToStrip - skip;
      bytes = bytes.subarray(skip);
    }
    const text = this.#utf8.decode(bytes, { stream: true });
    this.#window = text.length === 0 ? this.#window + 1 : 0;
    return text;
  }

  #pushWindow(id: number): string {
    this.#ids.push(id);
    const text = this.#tokenizer.decode(this.#ids, { skipSpecialTokens: this.#skipSpecialTokens });
    if (text.length > this.#prefixText.length && !text.endsWith("\uFFFD")) {
      const delta = text.slice(this.#prefixText.length);
      // The tokens just emitted become the next prefix (context for spacing); older ones are dropped.
      this.#ids = this.#ids.slice(this.#readOffset);
      this.#readOffset = this.#ids.length;
      this.#prefixText = this.#tokenizer.decode(this.#ids, { skipSpecialTokens: this.#skipSpecialTokens });
      this.#window = this.#ids.length;
      return delta;
    }
    this.#window = this.#ids.length;
    return "";
  }
}
