import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { type BuiltinTokenizerName, builtinTokenizerFiles } from "@tdist/llm";
import { Env, readEnv, TdistError } from "@tdist/runtime";
import { LlamaTokenType } from "./gguf-types.js";
import { GgufWriter } from "./gguf-writer.js";
import type { ModelProgressListener } from "./model-progress.js";
import { SeededRandom } from "./seeded-random.js";

/** What the tiny model's vocabulary is built from: a Hugging Face byte-level BPE tokenizer. */
export interface TinyModelTokenizerFiles {
  /** tokenizer.json contents. */
  tokenizerJson: string;
  /** tokenizer_config.json, parsed (its chat template and special tokens are used). */
  tokenizerConfig: Record<string, unknown>;
}

export interface TinyModelOptions {
  /** Where to write the GGUF file. */
  out: string;
  /** Transformer blocks. Default 2. */
  layers?: number;
  /** Embedding width. Default 64. */
  width?: number;
  /** Attention heads (`width` must divide by it). Default 4. */
  heads?: number;
  /** Key/value heads (grouped-query attention; must divide `heads`). Default `heads`. */
  kvHeads?: number;
  /** Feed-forward width. Default `4 * width`. */
  ffn?: number;
  /** Context length written to the model. Default 4096. */
  contextLength?: number;
  /** Weight seed: the same options and seed give the same file. Default 1. */
  seed?: number;
  /** The built-in vocabulary to use when `tokenizer` is not given. Default `qwen3`. */
  vocab?: BuiltinTokenizerName;
  /** The vocabulary. Default: the built-in tokenizer named by `vocab`. Only byte-level BPE tokenizers are supported. */
  tokenizer?: TinyModelTokenizerFiles;
  /**
   * Also store tokenizer.json verbatim under `tokenizer.huggingface.json`, so
   * a server hands the frontend the exact original tokenizer. Default true.
   */
  embedTokenizerJson?: boolean;
  /** Hears the bytes written so far as the file is written (see `GgufWriter.write`). */
  onProgress?: (progress: { bytes: number; totalBytes: number }) => void;
}

export interface TinyModel {
  path: string;
  bytes: number;
  vocabSize: number;
}

/** `general.name` of every generated model: random weights, not a trained model. */
export const TINY_MODEL_NAME = "tdist-tiny-random";

/** Bumped when the generated file changes, so caches regenerate (2: control-looking tokens typed as control). */
const TINY_MODEL_FORMAT = 2;

/** See the weight scales in `makeTinyModel`. */
const FFN_DOWN_GAIN = 4;

interface ResolvedTinyModelOptions {
  layers: number;
  width: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  contextLength: number;
  seed: number;
}

function resolveTinyModelOptions(options: Omit<TinyModelOptions, "out" | "vocab">): ResolvedTinyModelOptions {
  const integer = (name: string, value: number, min: number): number => {
    if (!Number.isInteger(value) || value < min) {
      throw new TdistError("invalid_option", `${name} must be an integer >= ${min}, got ${String(value)}`);
    }
    return value;
  };
  const width = integer("width", options.width ?? 64, 8);
  const heads = integer("heads", options.heads ?? 4, 1);
  const kvHeads = integer("kvHeads", options.kvHeads ?? heads, 1);
  if (width % heads !== 0) throw new TdistError("invalid_option", `width ${width} must divide by heads ${heads}`);
  if ((width / heads) % 2 !== 0) throw new TdistError("invalid_option", `width / heads must be even (rotary pairs)`);
  if (heads % kvHeads !== 0) throw new TdistError("invalid_option", `heads ${heads} must divide by kvHeads ${kvHeads}`);
  return {
    layers: integer("layers", options.layers ?? 2, 1),
    width,
    heads,
    kvHeads,
    ffn: integer("ffn", options.ffn ?? 4 * width, 1),
    contextLength: integer("contextLength", options.contextLength ?? 4096, 16),
    seed: integer("seed", options.seed ?? 1, 0),
  };
}

interface AddedToken {
  id: number;
  content: string;
  special?: boolean;
}

interface HfTokenizerJson {
  added_tokens?: AddedToken[];
  pre_tokenizer?: unknown;
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
}

/** The GGUF vocabulary of a byte-level BPE tokenizer, as llama.cpp's converter builds it. */
interface GgufVocab {
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
}

function specialTokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

/**
 * Texts llama.cpp's loader takes for end-of-generation or fill-in-the-middle
 * markers: one in the vocabulary that is not a control token gets a "was not
 * control-type; this is probably a bug in the model" warning on every load,
 * and is made one anyway. Qwen's vocabulary has `</s>` as an ordinary token.
 */
const CONTROL_LOOKING_TOKENS = new Set([
  "</s>",
  "<|eot_id|>",
  "<|eom_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<end_of_turn>",
  "<end_of_utterance>",
  "<EOT>",
  "_<EOT>",
  "<｜end▁of▁sentence｜>",
  "<|fim_prefix|>",
  "<|fim_suffix|>",
  "<|fim_middle|>",
  "<|fim_pad|>",
  "<|fim_repo|>",
  "<|repo_name|>",
  "<|file_sep|>",
  "<fim-prefix>",
  "<fim-suffix>",
  "<fim-middle>",
  "<fim-pad>",
  "<fim-repo>",
  "<file_sep>",
  "<PRE>",
  "<SUF>",
  "<MID>",
  "<PAD>",
  "<REPO>",
  "▁<PRE>",
  "▁<SUF>",
  "▁<MID>",
  "<｜fim▁begin｜>",
  "<｜fim▁hole｜>",
  "<｜fim▁end｜>",
  "<|code_prefix|>",
  "<|code_suffix|>",
  "<|code_middle|>",
]);

function vocabFromTokenizerJson(parsed: HfTokenizerJson): GgufVocab {
  const model = parsed.model;
  if (model?.type !== "BPE" || model.vocab === undefined || !Array.isArray(model.merges)) {
    throw new TdistError("invalid_option", "the tiny model needs a byte-level BPE tokenizer.json (model.type BPE)");
  }
  const byId = new Map<number, { text: string; type: number }>();
  for (const [text, id] of Object.entries(model.vocab)) {
    byId.set(id, { text, type: CONTROL_LOOKING_TOKENS.has(text) ? LlamaTokenType.control : LlamaTokenType.normal });
  }
  for (const added of parsed.added_tokens ?? []) {
    // llama.cpp's converter: special tokens and `<|...|>` lookalikes are control tokens.
    const looksSpecial = added.content.startsWith("<|") && added.content.endsWith("|>");
    const type = added.special === true || looksSpecial ? LlamaTokenType.control : LlamaTokenType.userDefined;
    byId.set(added.id, { text: added.content, type });
  }
  let size = 0;
  for (const id of byId.keys()) size = Math.max(size, id + 1);
  const tokens: string[] = new Array(size);
  const tokenTypes: number[] = new Array(size);
  const seen = new Set<string>();
  for (let id = 0; id < size; id++) {
    const entry = byId.get(id) ?? { text: `[PAD${id}]`, type: LlamaTokenType.unused };
    // llama.cpp aborts on duplicate token strings.
    if (seen.has(entry.text))
      throw new TdistError("invalid_option", `token ${JSON.stringify(entry.text)} appears twice`);
    seen.add(entry.text);
    tokens[id] = entry.text;
    tokenTypes[id] = entry.type;
  }
  const merges = model.merges.map((merge) => (typeof merge === "string" ? merge : `${merge[0]} ${merge[1]}`));
  return { tokens, tokenTypes, merges };
}

/** llama.cpp's name for the pre-tokenizer: Qwen2's split regex, else GPT-2's. */
function preTokenizerName(parsed: HfTokenizerJson): string {
  return JSON.stringify(parsed.pre_tokenizer ?? null).includes("\\\\p{N}|") ? "qwen2" : "gpt-2";
}

/**
 * Writes a tiny llama-architecture GGUF model with seeded random weights and
 * a real vocabulary (default: Qwen3's), for tests and demos: it runs real
 * inference through llama.cpp, but its output is noise. `general.name` is
 * `tdist-tiny-random` so no one mistakes it for a trained model.
 *
 * F32 tensors, tied embeddings (no `output.weight`), the tokenizer's tokens,
 * merges, token types, special token ids and chat template in the metadata,
 * so the model card comes from the file and the frontend's token ids equal
 * llama.cpp's.
 *
 * ```ts
 * await makeTinyModel({ out: "/tmp/tiny.gguf", layers: 2, width: 64 });
 * ```
 */
export async function makeTinyModel(options: TinyModelOptions): Promise<TinyModel> {
  const resolved = resolveTinyModelOptions(options);
  const files = options.tokenizer ?? builtinTokenizerFiles(options.vocab ?? "qwen3");
  const parsed = JSON.parse(files.tokenizerJson) as HfTokenizerJson;
  const vocab = vocabFromTokenizerJson(parsed);
  const config = files.tokenizerConfig;
  const idOf = (text: string | undefined): number | undefined => {
    if (text === undefined) return undefined;
    const id = vocab.tokens.indexOf(text);
    return id < 0 ? undefined : id;
  };
  const eosId = idOf(specialTokenText(config.eos_token));
  const padId = idOf(specialTokenText(config.pad_token));
  // Qwen has no bos token; like llama.cpp's converter, use `<|endoftext|>` then (never prepended).
  const bosId = idOf(specialTokenText(config.bos_token)) ?? idOf("<|endoftext|>") ?? padId;

  const { layers, width, heads, kvHeads, ffn, contextLength, seed } = resolved;
  const headDim = width / heads;
  const writer = new GgufWriter();
  writer
    .addString("general.architecture", "llama")
    .addString("general.name", TINY_MODEL_NAME)
    .addString(
      "general.description",
      `Random weights (seed ${seed}), not a trained model: generated by tdist for tests and demos; its output is noise.`,
    )
    .addUint32("general.file_type", 0)
    .addUint32("llama.context_length", contextLength)
    .addUint32("llama.embedding_length", width)
    .addUint32("llama.block_count", layers)
    .addUint32("llama.feed_forward_length", ffn)
    .addUint32("llama.attention.head_count", heads)
    .addUint32("llama.attention.head_count_kv", kvHeads)
    .addFloat32("llama.attention.layer_norm_rms_epsilon", 1e-6)
    .addUint32("llama.rope.dimension_count", headDim)
    .addFloat32("llama.rope.freq_base", 10_000)
    .addUint32("llama.vocab_size", vocab.tokens.length)
    .addString("tokenizer.ggml.model", "gpt2")
    .addString("tokenizer.ggml.pre", preTokenizerName(parsed))
    .addArray("tokenizer.ggml.tokens", "string", vocab.tokens)
    .addArray("tokenizer.ggml.token_type", "int32", vocab.tokenTypes)
    .addArray("tokenizer.ggml.merges", "string", vocab.merges)
    .addBool("tokenizer.ggml.add_bos_token", config.add_bos_token === true)
    .addBool("tokenizer.ggml.add_eos_token", false);
  if (bosId !== undefined) writer.addUint32("tokenizer.ggml.bos_token_id", bosId);
  if (eosId !== undefined) writer.addUint32("tokenizer.ggml.eos_token_id", eosId);
  if (padId !== undefined) writer.addUint32("tokenizer.ggml.padding_token_id", padId);
  const template = config.chat_template;
  if (typeof template === "string") {
    writer.addString("tokenizer.chat_template", template);
  } else if (Array.isArray(template)) {
    for (const entry of template as { name: string; template: string }[]) {
      writer.addString(
        entry.name === "default" ? "tokenizer.chat_template" : `tokenizer.chat_template.${entry.name}`,
        entry.template,
      );
    }
  }
  if (options.embedTokenizerJson ?? true) writer.addString("tokenizer.huggingface.json", files.tokenizerJson);

  // One generator in a fixed tensor order: the same options give the same bytes.
  const random = new SeededRandom(seed);
  const normal = (scale: number) => (out: Float32Array) => void random.fillNormal(out, scale);
  const ones = (out: Float32Array): void => void out.fill(1);
  const vocabSize = vocab.tokens.length;
  // Embedding scale 0.5 spreads the tied output logits (std ~ 0.5 * sqrt(width)) so
  // greedy picks are not near-ties that batching could flip; projections keep variance,
  // except ffn_down, whose gain lets the blocks outweigh the token's own embedding:
  // with tied embeddings a weak residual makes greedy decoding repeat one token forever.
  writer.addTensor("token_embd.weight", [width, vocabSize], normal(0.5));
  for (let layer = 0; layer < layers; layer++) {
    const block = `blk.${layer}`;
    writer
      .addTensor(`${block}.attn_norm.weight`, [width], ones)
      .addTensor(`${block}.attn_q.weight`, [width, width], normal(1 / Math.sqrt(width)))
      .addTensor(`${block}.attn_k.weight`, [width, kvHeads * headDim], normal(1 / Math.sqrt(width)))
      .addTensor(`${block}.attn_v.weight`, [width, kvHeads * headDim], normal(1 / Math.sqrt(width)))
      .addTensor(`${block}.attn_output.weight`, [width, width], normal(1 / Math.sqrt(width)))
      .addTensor(`${block}.ffn_norm.weight`, [width], ones)
      .addTensor(`${block}.ffn_gate.weight`, [width, ffn], normal(1 / Math.sqrt(width)))
      .addTensor(`${block}.ffn_up.weight`, [width, ffn], normal(1 / Math.sqrt(width)))
      .addTensor(`${block}.ffn_down.weight`, [ffn, width], normal(FFN_DOWN_GAIN / Math.sqrt(ffn)));
  }
  writer.addTensor("output_norm.weight", [width], ones);
  const bytes = await writer.write(
    options.out,
    options.onProgress !== undefined ? { onProgress: options.onProgress } : {},
  );
  return { path: options.out, bytes, vocabSize };
}

/** The cache file name for a tiny model made with these options (defaults: the built-in Qwen3 vocabulary). */
export function tinyModelFileName(options: Omit<TinyModelOptions, "out" | "tokenizer" | "onProgress"> = {}): string {
  const resolved = resolveTinyModelOptions(options);
  const defaults = resolveTinyModelOptions({});
  const parts = [`${TINY_MODEL_NAME}-${options.vocab ?? "qwen3"}-vocab`];
  if (JSON.stringify(resolved) !== JSON.stringify(defaults)) {
    const { layers, width, heads, kvHeads, ffn, contextLength, seed } = resolved;
    parts.push(`l${layers}-w${width}-h${heads}-kv${kvHeads}-f${ffn}-c${contextLength}-s${seed}`);
  }
  if (options.embedTokenizerJson === false) parts.push("nohf");
  parts.push(`v${TINY_MODEL_FORMAT}`);
  return `${parts.join("-")}.gguf`;
}

/** `TDIST_CACHE_DIR`, else `~/.cache/tdist`. */
export function defaultCacheDir(): string {
  const configured = readEnv(Env.cacheDir);
  return configured !== "" ? configured : join(homedir(), ".cache", "tdist");
}

export interface EnsureTinyModelOptions extends Omit<TinyModelOptions, "out" | "tokenizer" | "onProgress"> {
  /** Cache root; the model goes in its `models/` folder. Default `defaultCacheDir()`. */
  cacheDir?: string;
  /**
   * Hears the generation's progress (phase `generate`) when the model is not
   * cached yet; of concurrent callers, the one that started the generation.
   */
  onProgress?: ModelProgressListener;
}

const pending = new Map<string, Promise<string>>();

/**
 * The path of the built-in tiny model (Qwen3 vocabulary, random weights),
 * generated into the cache on first use. Safe to call concurrently, from one
 * process or many: each writes a temporary file and renames it into place.
 *
 * ```ts
 * const modelPath = await ensureTinyModel();
 * const engine = await LlamaCppEngine.start({ modelPath });
 * ```
 */
export function ensureTinyModel(options: EnsureTinyModelOptions = {}): Promise<string> {
  const { cacheDir, onProgress, ...modelOptions } = options;
  const path = join(cacheDir ?? defaultCacheDir(), "models", tinyModelFileName(modelOptions));
  let promise = pending.get(path);
  if (promise === undefined) {
    const written =
      onProgress === undefined
        ? {}
        : {
            onProgress: ({ bytes, totalBytes }: { bytes: number; totalBytes: number }) =>
              onProgress({ phase: "generate", model: path, bytes, totalBytes }),
          };
    promise = generateOnce(path, { ...modelOptions, ...written }).finally(() => pending.delete(path));
    pending.set(path, promise);
  }
  return promise;
}

async function generateOnce(path: string, options: Omit<TinyModelOptions, "out" | "tokenizer">): Promise<string> {
  try {
    if ((await stat(path)).size > 0) return path;
  } catch {
    // Not there yet: generate it below.
  }
  await mkdir(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await makeTinyModel({ ...options, out: temporary });
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true });
    throw TdistError.wrap(err, "internal", `cannot generate the tiny model at ${path}`);
  }
  return path;
}
