/**
 * How a tokenizer's tokens turn into bytes, read from tokenizer.json's
 * `decoder`, so that text can be decoded one token at a time through a
 * streaming UTF-8 decoder instead of re-decoding a window of tokens.
 *
 * Two families cover most LLM vocabularies:
 * - byte-level BPE (GPT-2, Llama 3, Qwen): every character of a token stands
 *   for one byte through GPT-2's bytes-to-unicode table;
 * - sentencepiece with byte fallback (Llama 2, Mistral, Gemma): `<0xNN>`
 *   tokens are single bytes, others are text with `▁` for a space, and the
 *   decoder may strip the first leading space of the sequence.
 *
 * Anything else is `text`: decode windows of tokens with the tokenizer.
 */
export type TokenDecodeStrategy =
  | {
      kind: "bytes";
      /** Token characters map to bytes through the bytes-to-unicode table. */
      byteLevel: boolean;
      /** `<0xNN>` tokens are single bytes. */
      byteFallback: boolean;
      /** Plain string replacements applied to each token (e.g. `▁` → space). */
      replacements: [from: string, to: string][];
      /** Leading spaces the decoder strips from the start of a sequence. */
      stripLeadingSpaces: number;
    }
  | { kind: "text" };

interface DecoderConfig {
  type?: string;
  decoders?: DecoderConfig[];
  pattern?: { String?: string; Regex?: string };
  content?: string;
  replacement?: string;
  start?: number;
  stop?: number;
}

const TEXT: TokenDecodeStrategy = { kind: "text" };

/** The decode strategy for a tokenizer.json `decoder` section. */
export function tokenDecodeStrategy(decoder: unknown): TokenDecodeStrategy {
  if (typeof decoder !== "object" || decoder === null) return TEXT;
  const config = decoder as DecoderConfig;
  if (config.type === "ByteLevel") return bytesStrategy({ byteLevel: true });
  if (config.type === "Metaspace") {
    return bytesStrategy({ replacements: [[config.replacement ?? "\u2581", " "]], stripLeadingSpaces: 1 });
  }
  if (config.type !== "Sequence" || !Array.isArray(config.decoders)) return TEXT;
  const parts = config.decoders;
  if (parts.length > 0 && parts.every((part) => part.type === "ByteLevel")) return bytesStrategy({ byteLevel: true });
  // The sentencepiece shape: Replace* ByteFallback Replace* Fuse [Strip].
  const replacements: [string, string][] = [];
  let byteFallback = false;
  let fused = false;
  let stripLeadingSpaces = 0;
  for (const [index, part] of parts.entries()) {
    if (part.type === "Replace" && !fused && typeof part.pattern?.String === "string") {
      replacements.push([part.pattern.String, part.content ?? ""]);
    } else if (part.type === "ByteFallback" && !fused) {
      byteFallback = true;
    } else if (part.type === "Fuse") {
      fused = true;
    } else if (part.type === "Strip" && fused && index === parts.length - 1 && part.content === " " && !part.stop) {
      stripLeadingSpaces = part.start ?? 0;
    } else {
      return TEXT;
    }
  }
  if (!byteFallback) return TEXT;
  return bytesStrategy({ byteFallback, replacements, stripLeadingSpaces });
}

function bytesStrategy(options: Partial<Extract<TokenDecodeStrategy, { kind: "bytes" }>>): TokenDecodeStrategy {
  return {
    kind: "bytes",
    byteLevel: options.byteLevel ?? false,
    byteFallback: options.byteFallback ?? false,
    replacements: options.replacements ?? [],
    stripLeadingSpaces: options.stripLeadingSpaces ?? 0,
  };
}

/** GPT-2's table from unicode characters back to the bytes they stand for. */
const UNICODE_TO_BYTE: ReadonlyMap<number, number> = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Map<number, number>();
  for (const b of printable) table.set(b, b);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    if (!printable.includes(b)) table.set(256 + shifted++, b);
  }
  return table;
})();

const BYTE_FALLBACK_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const utf8 = new TextEncoder();

/**
 * The bytes one vocabulary token stands for under a `bytes` strategy.
 * Added tokens (special or not) are their content, as the HF decoders treat them.
 */
export function tokenToBytes(
  token: string,
  isAddedToken: boolean,
  strategy: Extract<TokenDecodeStrategy, { kind: "bytes" }>,
): Uint8Array {
  if (strategy.byteLevel) {
    if (isAddedToken) return utf8.encode(token);
    const bytes: number[] = [];
    for (const char of token) {
      const codePoint = char.codePointAt(0) ?? 0;
      const byte = UNICODE_TO_BYTE.get(codePoint);
      if (byte !== undefined) bytes.push(byte);
      else bytes.push(...utf8.encode(char));
    }
    return Uint8Array.from(bytes);
  }
  if (strategy.byteFallback && !isAddedToken) {
    const match = BYTE_FALLBACK_TOKEN.exec(token);
    if (match?.[1] !== undefined) return Uint8Array.of(Number.parseInt(match[1], 16));
  }
  let text = token;
  for (const [from, to] of strategy.replacements) text = text.replaceAll(from, to);
  return utf8.encode(text);
}
