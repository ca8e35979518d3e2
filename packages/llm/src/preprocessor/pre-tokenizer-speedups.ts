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

/** Any pre-tokenizer: `pre_tokenize` maps `pre_tokenize_text` over its input and flattens one level. */
interface PreTokenizerStep {
  pre_tokenize(text: string | string[], options?: unknown): string[];
  pre_tokenize_text(text: string, options?: unknown): string[] | string;
}

/** The fields of the library's ByteLevel pre-tokenizer this module reads. */
interface ByteLevelPreTokenizer {
  add_prefix_space: boolean;
  use_regex: boolean;
  pattern: RegExp;
  byte_encoder: Record<number, string>;
  pre_tokenize_text(text: string, options?: unknown): string[];
}

function isPreTokenizer(value: unknown): value is PreTokenizerStep {
  if (typeof value !== "function" && (typeof value !== "object" || value === null)) return false;
  const candidate = value as Partial<PreTokenizerStep>;
  return typeof candidate.pre_tokenize === "function" && typeof candidate.pre_tokenize_text === "function";
}

function isByteLevel(value: unknown): value is ByteLevelPreTokenizer {
  if (typeof value !== "function" && (typeof value !== "object" || value === null)) return false;
  const candidate = value as Partial<ByteLevelPreTokenizer>;
  return (
    typeof candidate.pre_tokenize_text === "function" &&
    typeof candidate.byte_encoder === "object" &&
    candidate.byte_encoder !== null &&
    typeof candidate.use_regex === "boolean" &&
    candidate.pattern instanceof RegExp
  );
}

/** Maps UTF-8 bytes to the byte-level alphabet; ASCII without a TextEncoder round trip. */
function byteLevelMapper(byteEncoder: Record<number, string>): (token: string) => string {
  const table: string[] = Array.from({ length: 256 }, (_, byte) => byteEncoder[byte] ?? "");
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

function appendFlat(out: string[], result: string[] | string): void {
  if (Array.isArray(result)) for (const item of result) out.push(item);
  else out.push(result);
}

/** The library's `pre_tokenize` (map, then `flat()`), as one loop. */
function flattenWithLoops(step: PreTokenizerStep): void {
  step.pre_tokenize = function preTokenize(this: PreTokenizerStep, text: string | string[], options?: unknown) {
    const out: string[] = [];
    if (Array.isArray(text)) for (const piece of text) appendFlat(out, this.pre_tokenize_text(piece, options));
    else appendFlat(out, this.pre_tokenize_text(text, options));
    return out;
  };
}

function speedUpByteLevel(preTokenizer: ByteLevelPreTokenizer): void {
  const mapBytes = byteLevelMapper(preTokenizer.byte_encoder);
  preTokenizer.pre_tokenize_text = function preTokenizeText(this: ByteLevelPreTokenizer, text: string): string[] {
    let input = text;
    if (this.add_prefix_space && !input.startsWith(" ")) input = ` ${input}`;
    if (!this.use_regex) return [mapBytes(input)];
    const pieces = input.match(this.pattern) ?? [];
    for (let i = 0; i < pieces.length; i++) pieces[i] = mapBytes(pieces[i] as string);
    return pieces;
  };
}

/**
 * Speeds up the pre-tokenizers of a built `@huggingface/tokenizers`
 * Tokenizer (the root and those inside a `Sequence`): loops instead of
 * `flat()`, and a table for ByteLevel's byte mapping. Anything it does not
 * recognise is left as it is.
 */
export function speedUpPreTokenizers(hfTokenizer: unknown): void {
  const root = (hfTokenizer as { pre_tokenizer?: unknown } | null)?.pre_tokenizer;
  const pending: unknown[] = [root];
  while (pending.length > 0) {
    const node = pending.pop();
    if (!isPreTokenizer(node)) continue;
    flattenWithLoops(node);
    if (isByteLevel(node)) speedUpByteLevel(node);
    const children = (node as { tokenizers?: unknown }).tokenizers;
    if (Array.isArray(children)) pending.push(...children);
  }
}
