import { basename } from "node:path";
import { TdistError } from "@tdist/runtime";
import type { GgufFileInfo } from "./gguf-reader.js";
import type { GgufMetadataValue } from "./gguf-types.js";
import { LlamaTokenType } from "./gguf-types.js";

/** Pre-tokenizer split patterns of llama.cpp's `tokenizer.ggml.pre` names (as in the models' own tokenizer.json). */
const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const PRE_TOKENIZER_PATTERNS: Record<string, string> = {
  "llama-bpe": LLAMA3_PATTERN,
  llama3: LLAMA3_PATTERN,
  qwen2:
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/** What the engine learns about a model from its GGUF metadata alone. */
export interface GgufModelDescription {
  /** `general.name`, else the file name without `.gguf`. */
  name: string;
  architecture: string;
  /** `{architecture}.context_length`: what the model was trained for. */
  trainedContextLength: number | undefined;
  vocabSize: number;
  /** HF tokenizer.json: `tokenizer.huggingface.json` when the file carries it, else rebuilt from the vocabulary. */
  tokenizerJson: string;
  /** Whether `tokenizerJson` was rebuilt (not stored in the file). */
  tokenizerRebuilt: boolean;
  chatTemplate: string | undefined;
  bosToken: string | undefined;
  eosToken: string | undefined;
  bosTokenId: number | undefined;
  eosTokenId: number | undefined;
  addBosToken: boolean;
  /** Token types (`LlamaTokenType`), by id. */
  tokenTypes: number[];
  /** Things a user should know (a guessed pre-tokenizer, ...). */
  warnings: string[];
}

function stringOf(metadata: Map<string, GgufMetadataValue>, key: string): string | undefined {
  const value = metadata.get(key);
  return typeof value === "string" ? value : undefined;
}

function numberOf(metadata: Map<string, GgufMetadataValue>, key: string): number | undefined {
  const value = metadata.get(key);
  return typeof value === "number" ? value : undefined;
}

function stringsOf(metadata: Map<string, GgufMetadataValue>, key: string): string[] | undefined {
  const value = metadata.get(key);
  return Array.isArray(value) && value.every((item) => typeof item === "string") ? (value as string[]) : undefined;
}

/**
 * Ids of the special added tokens of an HF tokenizer.json: what the
 * frontend's tokenizer treats as control tokens rather than text.
 */
export function specialTokenIdsOf(tokenizerJson: string): Set<number> {
  const parsed = JSON.parse(tokenizerJson) as { added_tokens?: { id?: unknown; special?: unknown }[] };
  const ids = new Set<number>();
  for (const token of parsed.added_tokens ?? []) {
    if (token.special === true && typeof token.id === "number") ids.add(token.id);
  }
  return ids;
}

const BYTE_LEVEL = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };

/**
 * An HF tokenizer.json for a GGUF byte-level BPE vocabulary
 * (`tokenizer.ggml.model = gpt2`): the vocabulary and merges, control and
 * user-defined tokens as added tokens, and the pre-tokenizer llama.cpp uses
 * for `tokenizer.ggml.pre` (Qwen2's, Llama 3's or GPT-2's), so that the
 * frontend's token ids equal llama.cpp's.
 */
function rebuildByteLevelBpe(
  path: string,
  metadata: Map<string, GgufMetadataValue>,
  tokens: string[],
  tokenTypes: number[],
  warnings: string[],
): string {
  const merges = stringsOf(metadata, "tokenizer.ggml.merges");
  if (merges === undefined) throw new TdistError("bad_request", `GGUF file ${path} has no tokenizer.ggml.merges`);
  const pre = stringOf(metadata, "tokenizer.ggml.pre") ?? "gpt-2";
  const vocab: Record<string, number> = {};
  const addedTokens: object[] = [];
  for (const [id, token] of tokens.entries()) {
    const type = tokenTypes[id] ?? LlamaTokenType.normal;
    if (type === LlamaTokenType.control || type === LlamaTokenType.userDefined) {
      addedTokens.push({
        id,
        content: token,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: type === LlamaTokenType.control,
      });
    } else if (type !== LlamaTokenType.unused) {
      vocab[token] = id;
    }
  }
  let preTokenizer: object;
  const pattern = PRE_TOKENIZER_PATTERNS[pre];
  if (pattern !== undefined) {
    preTokenizer = {
      type: "Sequence",
      pretokenizers: [{ type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false }, BYTE_LEVEL],
    };
  } else {
    if (pre !== "gpt-2" && pre !== "default") {
      warnings.push(`pre-tokenizer ${JSON.stringify(pre)} is not known here; using GPT-2's, token ids may differ`);
    }
    preTokenizer = { ...BYTE_LEVEL, use_regex: true };
  }
  return JSON.stringify({
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    // Qwen2's own tokenizer.json normalizes to NFC; llama.cpp does not, so NFC input tokenizes the same.
    normalizer: pre === "qwen2" ? { type: "NFC" } : null,
    pre_tokenizer: preTokenizer,
    post_processor: BYTE_LEVEL,
    decoder: BYTE_LEVEL,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre === "llama-bpe" || pre === "llama3",
      vocab,
      merges,
    },
  });
}

/** Rebuilds tokenizer.json from the GGUF vocabulary even when the file stores the original (tests, comparisons). */
export function rebuildTokenizerJson(info: GgufFileInfo): string {
  return describe(info, { preferStored: false }).tokenizerJson;
}

/**
 * Everything a model card needs that the GGUF file says: name, tokenizer
 * (stored or rebuilt), chat template, special tokens. Throws `bad_request`
 * naming the file when the metadata lacks what llama.cpp needs.
 */
export function describeGgufModel(info: GgufFileInfo): GgufModelDescription {
  return describe(info, { preferStored: true });
}

function describe(info: GgufFileInfo, options: { preferStored: boolean }): GgufModelDescription {
  const { metadata, path } = info;
  const fail = (what: string): never => {
    throw new TdistError("bad_request", `GGUF file ${path} ${what}`);
  };
  const architecture = stringOf(metadata, "general.architecture") ?? fail("has no general.architecture");
  const tokens = stringsOf(metadata, "tokenizer.ggml.tokens") ?? fail("has no tokenizer.ggml.tokens");
  const model = stringOf(metadata, "tokenizer.ggml.model") ?? fail("has no tokenizer.ggml.model");
  const rawTypes = metadata.get("tokenizer.ggml.token_type");
  const tokenTypes = Array.isArray(rawTypes)
    ? rawTypes.map((type) => (typeof type === "number" ? type : LlamaTokenType.normal))
    : tokens.map(() => LlamaTokenType.normal);
  const warnings: string[] = [];
  const stored = stringOf(metadata, "tokenizer.huggingface.json");
  let tokenizerJson: string;
  let tokenizerRebuilt = false;
  if (options.preferStored && stored !== undefined) {
    tokenizerJson = stored;
  } else if (model === "gpt2") {
    tokenizerJson = rebuildByteLevelBpe(path, metadata, tokens, tokenTypes, warnings);
    tokenizerRebuilt = true;
  } else {
    throw new TdistError(
      "bad_request",
      `GGUF file ${path} has a ${JSON.stringify(model)} tokenizer without tokenizer.huggingface.json; ` +
        `only byte-level BPE vocabularies (tokenizer.ggml.model = "gpt2": Llama 3, Qwen, GPT-2, ...) can be served`,
    );
  }
  const bosTokenId = numberOf(metadata, "tokenizer.ggml.bos_token_id");
  const eosTokenId = numberOf(metadata, "tokenizer.ggml.eos_token_id");
  const addBos = metadata.get("tokenizer.ggml.add_bos_token");
  const fileName = basename(path).replace(/\.gguf$/i, "");
  return {
    name: stringOf(metadata, "general.name") ?? fileName,
    architecture,
    trainedContextLength: numberOf(metadata, `${architecture}.context_length`),
    vocabSize: tokens.length,
    tokenizerJson,
    tokenizerRebuilt,
    chatTemplate: stringOf(metadata, "tokenizer.chat_template"),
    bosTokenId,
    eosTokenId,
    bosToken: bosTokenId === undefined ? undefined : tokens[bosTokenId],
    eosToken: eosTokenId === undefined ? undefined : tokens[eosTokenId],
    // llama.cpp's default: sentencepiece vocabularies prepend bos, byte-level BPE ones do not.
    addBosToken: typeof addBos === "boolean" ? addBos : model === "llama",
    tokenTypes,
    warnings,
  };
}
