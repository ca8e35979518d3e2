// @ts-check
// Plain JavaScript (type-checked from JSDoc) so the tokenizer worker thread,
// which Node starts without a TypeScript loader, imports it from src as from dist.

/**
 * Cheaper pre-tokenization for `@huggingface/tokenizers`, same output.
 *
 * The library maps every pre-token to its byte-level alphabet with a
 * `TextEncoder` call, an array of one-character strings and a `join` per
 * pre-token, and every pre-tokenizer step maps to nested arrays and
 * `flat()`s them: for byte-level BPE models (GPT-2, Llama 3, Qwen) that was
 * most of prompt tokenization's cost. These replacements do the same work
 * with a lookup table and plain loops.
 */

/**
 * Any pre-tokenizer: `pre_tokenize` maps `pre_tokenize_text` over its input and flattens one level.
 * @typedef {{
 *   pre_tokenize(text: string | string[], options?: unknown): string[];
 *   pre_tokenize_text(text: string, options?: unknown): string[] | string;
 * }} PreTokenizerStep
 */

/**
 * The fields of the library's ByteLevel pre-tokenizer this module reads.
 * @typedef {{
 *   add_prefix_space: boolean;
 *   use_regex: boolean;
 *   pattern: RegExp;
 *   byte_encoder: Record<number, string>;
 *   pre_tokenize_text(text: string, options?: unknown): string[];
 * }} ByteLevelPreTokenizer
 */

/**
 * @param {unknown} value
 * @returns {value is PreTokenizerStep}
 */
function isPreTokenizer(value) {
  if (typeof value !== "function" && (typeof value !== "object" || value === null)) return false;
  const candidate = /** @type {Partial<PreTokenizerStep>} */ (value);
  return typeof candidate.pre_tokenize === "function" && typeof candidate.pre_tokenize_text === "function";
}

/**
 * @param {unknown} value
 * @returns {value is ByteLevelPreTokenizer}
 */
function isByteLevel(value) {
  if (typeof value !== "function" && (typeof value !== "object" || value === null)) return false;
  const candidate = /** @type {Partial<ByteLevelPreTokenizer>} */ (value);
  return (
    typeof candidate.pre_tokenize_text === "function" &&
    typeof candidate.byte_encoder === "object" &&
    candidate.byte_encoder !== null &&
    typeof candidate.use_regex === "boolean" &&
    candidate.pattern instanceof RegExp
  );
}

/**
 * Maps UTF-8 bytes to the byte-level alphabet; ASCII without a TextEncoder round trip.
 * @param {Record<number, string>} byteEncoder
 * @returns {(token: string) => string}
 */
function byteLevelMapper(byteEncoder) {
  /** @type {string[]} */
  const table = Array.from({ length: 256 }, (_, byte) => byteEncoder[byte] ?? "");
  const encoder = new TextEncoder();
  return (token) => {
    let out = "";
    for (let i = 0; i < token.length; i++) {
      const code = token.charCodeAt(i);
      if (code >= 0x80) {
        // Non-ASCII: encode the rest once and map its bytes.
        for (const byte of encoder.encode(token.slice(i))) out += table[byte];
        return out;
      }
      out += table[code];
    }
    return out;
  };
}

/**
 * @param {string[]} out
 * @param {string[] | string} result
 */
function appendFlat(out, result) {
  if (Array.isArray(result)) for (const item of result) out.push(item);
  else out.push(result);
}

/**
 * The library's `pre_tokenize` (map, then `flat()`), as one loop.
 * @param {PreTokenizerStep} step
 */
function flattenWithLoops(step) {
  /**
   * @this {PreTokenizerStep}
   * @param {string | string[]} text
   * @param {unknown} [options]
   */
  step.pre_tokenize = function preTokenize(text, options) {
    /** @type {string[]} */
    const out = [];
    if (Array.isArray(text)) for (const piece of text) appendFlat(out, this.pre_tokenize_text(piece, options));
    else appendFlat(out, this.pre_tokenize_text(text, options));
    return out;
  };
}

/** @param {ByteLevelPreTokenizer} preTokenizer */
function speedUpByteLevel(preTokenizer) {
  const mapBytes = byteLevelMapper(preTokenizer.byte_encoder);
  /**
   * @this {ByteLevelPreTokenizer}
   * @param {string} text
   * @returns {string[]}
   */
  preTokenizer.pre_tokenize_text = function preTokenizeText(text) {
    let input = text;
    if (this.add_prefix_space && !input.startsWith(" ")) input = ` ${input}`;
    if (!this.use_regex) return [mapBytes(input)];
    const pieces = input.match(this.pattern) ?? [];
    for (let i = 0; i < pieces.length; i++) pieces[i] = mapBytes(/** @type {string} */ (pieces[i]));
    return pieces;
  };
}

/**
 * Speeds up the pre-tokenizers of a built `@huggingface/tokenizers`
 * Tokenizer (the root and those inside a `Sequence`): loops instead of
 * `flat()`, and a table for ByteLevel's byte mapping. Anything it does not
 * recognise is left as it is.
 * @param {unknown} hfTokenizer
 * @returns {void}
 */
export function speedUpPreTokenizers(hfTokenizer) {
  const root = /** @type {{ pre_tokenizer?: unknown } | null} */ (hfTokenizer)?.pre_tokenizer;
  /** @type {unknown[]} */
  const pending = [root];
  while (pending.length > 0) {
    const node = pending.pop();
    if (!isPreTokenizer(node)) continue;
    flattenWithLoops(node);
    if (isByteLevel(node)) speedUpByteLevel(node);
    const children = /** @type {{ tokenizers?: unknown }} */ (node).tokenizers;
    if (Array.isArray(children)) pending.push(...children);
  }
}
