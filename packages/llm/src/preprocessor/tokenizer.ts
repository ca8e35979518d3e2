import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { TdistError } from "@tdist/runtime";
import { speedUpPreTokenizers } from "./pre-tokenizer-speedups.js";
import { type TokenDecodeStrategy, tokenDecodeStrategy, tokenToBytes } from "./token-bytes.js";
import { chatTemplateFromConfig, specialTokenContent, type TokenizerConfig } from "./tokenizer-config.js";

/**
 * The part of `@huggingface/tokenizers`' Tokenizer this module uses. Declared
 * here because the package's type declarations do not resolve under NodeNext
 * (extensionless relative imports), which leaves the class typed `any`.
 */
interface HfTokenizerApi {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] };
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  model: { vocab: (string | undefined)[] } | null;
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

interface ParsedTokenizerJson {
  added_tokens?: AddedTokenJson[];
  normalizer?: unknown;
  decoder?: unknown;
  model?: { type?: string };
}

/** The parsed and built vocabulary: the expensive, shareable part of a tokenizer. */
interface BuiltVocabulary {
  hf: HfTokenizerApi;
  addedTokens: AddedTokenJson[];
  normalizer: unknown;
  decoder: unknown;
  /** The options the HF tokenizer was built with (to build the same one in a worker thread). */
  hfConfig: Readonly<Record<string, unknown>>;
  loadMs: number;
}

function parseTokenizerJson(json: string): ParsedTokenizerJson {
  try {
    const parsed = JSON.parse(json) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
    return parsed as ParsedTokenizerJson;
  } catch (err) {
    throw TdistError.wrap(err, "bad_request", "tokenizer.json is not a JSON object");
  }
}

function modelTypeOf(parsed: ParsedTokenizerJson): string {
  return typeof parsed.model?.type === "string" ? parsed.model.type : "";
}

/**
 * The tokenizer_config fields `@huggingface/tokenizers` reads: text
 * preprocessing flags, and the special tokens only for the Unigram and
 * legacy models that look them up. Spaces are never cleaned up on decode.
 */
function hfConfigFor(modelType: string, config: TokenizerConfig): Record<string, unknown> {
  const hfConfig: Record<string, unknown> = { clean_up_tokenization_spaces: false };
  if (config.remove_space !== undefined) hfConfig.remove_space = config.remove_space;
  if (config.do_lowercase_and_remove_accent !== undefined) {
    hfConfig.do_lowercase_and_remove_accent = config.do_lowercase_and_remove_accent;
  }
  if (modelType !== "BPE" && modelType !== "WordPiece") {
    for (const field of ["bos_token", "eos_token", "pad_token", "unk_token"] as const) {
      const content = specialTokenContent(config[field]);
      if (content !== undefined) hfConfig[field] = content;
    }
    if (config.target_lang !== undefined) hfConfig.target_lang = config.target_lang;
  }
  return hfConfig;
}

function buildVocabulary(
  parsed: ParsedTokenizerJson,
  hfConfig: Record<string, unknown>,
  started: number,
): BuiltVocabulary {
  let hf: HfTokenizerApi;
  try {
    hf = new HfTokenizer(parsed, hfConfig) as HfTokenizerApi;
  } catch (err) {
    throw TdistError.wrap(err, "bad_request", "cannot build tokenizer from tokenizer.json");
  }
  speedUpPreTokenizers(hf);
  const addedTokens = Array.isArray(parsed.added_tokens) ? parsed.added_tokens : [];
  return {
    hf,
    addedTokens,
    normalizer: parsed.normalizer,
    decoder: parsed.decoder,
    hfConfig,
    loadMs: performance.now() - started,
  };
}

/** The files a tokenizer is built from. */
export interface TokenizerFiles {
  /** tokenizer.json contents. */
  tokenizerJson: string;
  /** tokenizer_config.json, parsed or as text; `{}` when the model has none. */
  tokenizerConfig?: TokenizerConfig | string;
  /** Expected sha256 hex of tokenizer.json's UTF-8 bytes; a mismatch is a `bad_request`. */
  sha256?: string;
}

export interface EncodeOptions {
  /**
   * Run the tokenizer's post-processor (e.g. a bos prefix from its template)
   * and prepend bos when tokenizer_config says `add_bos_token: true` and it is
   * not there yet. Default `true`. Special token *text* in the input is always
   * parsed as the special token, as in transformers.
   */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (eos, `<|im_start|>`, ...). Default `false`. */
  skipSpecialTokens?: boolean;
}

/**
 * A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) with the
 * ids and token bytes the preprocessor and the incremental detokenizer need.
 *
 * ```ts
 * const tokenizer = loadTokenizer({ tokenizerJson, tokenizerConfig });
 * const ids = tokenizer.encode("Hello", { addSpecialTokens: false });
 * tokenizer.decode(ids); // "Hello"
 * ```
 *
 * Building one is synchronous and slow for large vocabularies: Qwen3's 11 MB
 * tokenizer.json took 0.52-0.64 s to parse and build (plus 20 ms of sha256)
 * on a busy 2-core machine, ~0.25 s on an idle core; the event loop is
 * blocked meanwhile. Use `loadTokenizer`, which builds each distinct
 * tokenizer once per process.
 */
export class Tokenizer {
  /** sha256 hex of tokenizer.json's UTF-8 bytes. */
  readonly sha256: string;
  readonly config: Readonly<TokenizerConfig>;
  /** Number of ids in the vocabulary, added tokens included (highest id + 1). */
  readonly vocabSize: number;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  /** tokenizer_config's `add_bos_token` (false when absent). */
  readonly addBosToken: boolean;
  /** Ids of special tokens: added tokens marked special plus `additional_special_tokens`. */
  readonly specialTokenIds: ReadonlySet<number>;
  /** How tokens map to bytes for incremental decoding. */
  readonly decodeStrategy: TokenDecodeStrategy;
  /** Milliseconds it took to parse tokenizer.json and build the vocabulary (shared builds report the first). */
  readonly loadMs: number;
  /**
   * The tokenizer_config fields the HF tokenizer was built with: with the
   * same tokenizer.json they build an identical one (in a worker thread).
   */
  readonly hfConfig: Readonly<Record<string, unknown>>;

  readonly #hf: HfTokenizerApi;
  readonly #addedTokenIds: ReadonlySet<number>;
  readonly #tokenBytes: (Uint8Array | undefined)[] = [];
  /** The Unicode form the normalizer puts text in (`""`: none), or undefined when it may do more than that. */
  readonly #unicodeForm: string | undefined;
  #maxTokenBytes: number | undefined;

  private constructor(vocabulary: BuiltVocabulary, config: TokenizerConfig, sha256: string) {
    this.#hf = vocabulary.hf;
    this.sha256 = sha256;
    this.config = config;
    this.#addedTokenIds = new Set(vocabulary.addedTokens.map((token) => token.id));
    const special = new Set(vocabulary.addedTokens.filter((token) => token.special === true).map((token) => token.id));
    for (const value of config.additional_special_tokens ?? []) {
      const content = specialTokenContent(value);
      const id = content === undefined ? undefined : this.#hf.token_to_id(content);
      if (id !== undefined) special.add(id);
    }
    this.specialTokenIds = special;
    this.vocabSize = this.#hf.model?.vocab.length ?? 0;
    this.bosToken = specialTokenContent(config.bos_token);
    this.eosToken = specialTokenContent(config.eos_token);
    this.bosTokenId = this.bosToken === undefined ? undefined : this.#hf.token_to_id(this.bosToken);
    this.eosTokenId = this.eosToken === undefined ? undefined : this.#hf.token_to_id(this.eosToken);
    this.addBosToken = config.add_bos_token === true;
    this.decodeStrategy = tokenDecodeStrategy(vocabulary.decoder);
    this.loadMs = vocabulary.loadMs;
    this.hfConfig = vocabulary.hfConfig;
    this.#unicodeForm = unicodeFormOf(vocabulary.normalizer);
  }

  static readonly #tokenizers = new Map<string, Tokenizer>();
  static readonly #vocabularies = new Map<string, BuiltVocabulary>();
  static readonly #modelTypes = new Map<string, string>();

  /** Builds a tokenizer without the process-wide cache (prefer `loadTokenizer`). */
  static fromFiles(files: TokenizerFiles): Tokenizer {
    const sha256 = sha256Hex(files.tokenizerJson);
    verifySha256(files, sha256);
    const config = parseConfig(files.tokenizerConfig);
    const started = performance.now();
    const parsed = parseTokenizerJson(files.tokenizerJson);
    return new Tokenizer(buildVocabulary(parsed, hfConfigFor(modelTypeOf(parsed), config), started), config, sha256);
  }

  /**
   * `loadTokenizer`: cached per tokenizer.json and config. The expensive part
   * (parsing and building the vocabulary) is shared by configs that differ
   * only in fields the HF tokenizer does not read, so a worker's full
   * tokenizer_config and a frontend's config rebuilt from the card share it.
   */
  static load(files: TokenizerFiles): Tokenizer {
    const sha256 = sha256Hex(files.tokenizerJson);
    verifySha256(files, sha256);
    const config = parseConfig(files.tokenizerConfig);
    const key = `${sha256}:${sha256Hex(JSON.stringify(config))}`;
    const cached = Tokenizer.#tokenizers.get(key);
    if (cached !== undefined) return cached;
    const started = performance.now();
    let parsed: ParsedTokenizerJson | undefined;
    let modelType = Tokenizer.#modelTypes.get(sha256);
    if (modelType === undefined) {
      parsed = parseTokenizerJson(files.tokenizerJson);
      modelType = modelTypeOf(parsed);
      Tokenizer.#modelTypes.set(sha256, modelType);
    }
    const hfConfig = hfConfigFor(modelType, config);
    const vocabularyKey = `${sha256}:${JSON.stringify(hfConfig)}`;
    let vocabulary = Tokenizer.#vocabularies.get(vocabularyKey);
    if (vocabulary === undefined) {
      vocabulary = buildVocabulary(parsed ?? parseTokenizerJson(files.tokenizerJson), hfConfig, started);
      Tokenizer.#vocabularies.set(vocabularyKey, vocabulary);
    }
    const tokenizer = new Tokenizer(vocabulary, config, sha256);
    Tokenizer.#tokenizers.set(key, tokenizer);
    return tokenizer;
  }

  /** Empties `loadTokenizer`'s cache (tests). */
  static clearCache(): void {
    Tokenizer.#tokenizers.clear();
    Tokenizer.#vocabularies.clear();
    Tokenizer.#modelTypes.clear();
  }

  /** The model's chat template from tokenizer_config (the `tool_use` one when tools are given and it has one). */
  chatTemplate(options: { tools?: boolean } = {}): string | undefined {
    return chatTemplateFromConfig(this.config, options);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const addSpecialTokens = options.addSpecialTokens ?? true;
    return this.finishEncoding(this.#hf.encode(text, { add_special_tokens: addSpecialTokens }).ids, options);
  }

  /**
   * What `encode` does after the HF tokenizer: the `add_bos_token` rule. For
   * ids an identical HF tokenizer computed elsewhere (a worker thread), so
   * they end up as `encode`'s. Modifies and returns `ids`.
   */
  finishEncoding(ids: number[], options: EncodeOptions = {}): number[] {
    const addSpecialTokens = options.addSpecialTokens ?? true;
    if (addSpecialTokens && this.addBosToken && this.bosTokenId !== undefined && ids[0] !== this.bosTokenId) {
      ids.unshift(this.bosTokenId);
    }
    return ids;
  }

  /** Decodes a whole sequence (never cleans up tokenization spaces, like incremental decoding). */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const kept = options.skipSpecialTokens ? ids.filter((id) => !this.specialTokenIds.has(id)) : [...ids];
    if (kept.length === 0) return "";
    return this.#hf.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  idToToken(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  isSpecial(id: number): boolean {
    return this.specialTokenIds.has(id);
  }

  /**
   * A lower bound on how many tokens `text` encodes to, computed without
   * tokenizing it (a few milliseconds for megabytes), or undefined when this
   * tokenizer admits no sound bound. Every token stands for at most
   * `maxTokenBytes` bytes of the normalized text, and every byte of it is
   * covered by some token, so there are at least
   * `ceil(normalizedBytes / maxTokenBytes)` tokens. That holds for vocabularies
   * that spell every byte (byte-level BPE, byte fallback) under a normalizer
   * that at most changes the Unicode form; an `<unk>` token could stand for
   * any number of bytes, and other normalizers may remove text.
   */
  minTokenCount(text: string): number | undefined {
    const strategy = this.decodeStrategy;
    if (strategy.kind !== "bytes" || !(strategy.byteLevel || strategy.byteFallback)) return undefined;
    if (this.#unicodeForm === undefined) return undefined;
    const normalized = this.#unicodeForm === "" ? text : text.normalize(this.#unicodeForm);
    return Math.ceil(Buffer.byteLength(normalized) / this.maxTokenBytes);
  }

  /** The most bytes any one token stands for (computed once, over the whole vocabulary). */
  get maxTokenBytes(): number {
    if (this.#maxTokenBytes === undefined) {
      let max = 1;
      for (let id = 0; id < this.vocabSize; id++) {
        const bytes = this.tokenBytes(id)?.length ?? Buffer.byteLength(this.decode([id]));
        if (bytes > max) max = bytes;
      }
      this.#maxTokenBytes = max;
    }
    return this.#maxTokenBytes;
  }

  /**
   * The bytes a token stands for when `decodeStrategy.kind` is `bytes`
   * (memoised per id); `undefined` for ids outside the vocabulary or under a
   * `text` strategy.
   */
  tokenBytes(id: number): Uint8Array | undefined {
    const cached = this.#tokenBytes[id];
    if (cached !== undefined) return cached;
    if (this.decodeStrategy.kind !== "bytes" || !Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      return undefined;
    }
    const token = this.#hf.id_to_token(id);
    if (token === undefined) return undefined;
    const bytes = tokenToBytes(token, this.#addedTokenIds.has(id), this.decodeStrategy);
    this.#tokenBytes[id] = bytes;
    return bytes;
  }
}

const UNICODE_FORMS: readonly string[] = ["NFC", "NFD", "NFKC", "NFKD"];

/**
 * What a tokenizer.json normalizer does, if it only puts text in a Unicode
 * form: `""` for no normalizer, the form's name for NFC/NFD/NFKC/NFKD alone,
 * undefined for anything else (lowercasing, stripping, replacing).
 */
function unicodeFormOf(normalizer: unknown): string | undefined {
  if (normalizer === undefined || normalizer === null) return "";
  const type = (normalizer as { type?: unknown }).type;
  return typeof type === "string" && UNICODE_FORMS.includes(type) ? type : undefined;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function verifySha256(files: TokenizerFiles, actual: string): void {
  if (files.sha256 !== undefined && files.sha256.toLowerCase() !== actual) {
    throw new TdistError(
      "bad_request",
      `tokenizer.json sha256 mismatch: expected ${files.sha256}, got ${actual} (${files.tokenizerJson.length} chars)`,
    );
  }
}

function parseConfig(config: TokenizerFiles["tokenizerConfig"]): TokenizerConfig {
  if (config === undefined) return {};
  if (typeof config !== "string") return config;
  try {
    const parsed = JSON.parse(config) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
    return parsed as TokenizerConfig;
  } catch (err) {
    throw TdistError.wrap(err, "bad_request", "tokenizer_config.json is not a JSON object");
  }
}

/**
 * The tokenizer for these files, built once per process: cached by the
 * sha256 of tokenizer.json (verified against `files.sha256` when given) and
 * of the config. Cached tokenizers live as long as the process.
 */
export function loadTokenizer(files: TokenizerFiles): Tokenizer {
  return Tokenizer.load(files);
}

/** Empties `loadTokenizer`'s cache (tests). */
export function clearTokenizerCache(): void {
  Tokenizer.clearCache();
}

/** Loads `tokenizer.json` and, when present, `tokenizer_config.json` from a model directory (cached). */
export async function loadTokenizerFromDirectory(directory: string): Promise<Tokenizer> {
  let tokenizerJson: string;
  try {
    tokenizerJson = await readFile(join(directory, "tokenizer.json"), "utf8");
  } catch (err) {
    throw TdistError.wrap(err, "bad_request", `cannot read tokenizer.json in ${directory}`);
  }
  let tokenizerConfig: string | undefined;
  try {
    tokenizerConfig = await readFile(join(directory, "tokenizer_config.json"), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw TdistError.wrap(err, "bad_request", `cannot read tokenizer_config.json in ${directory}`);
    }
  }
  return loadTokenizer(tokenizerConfig === undefined ? { tokenizerJson } : { tokenizerJson, tokenizerConfig });
}
