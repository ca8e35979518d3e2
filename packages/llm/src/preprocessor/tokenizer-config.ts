import type { ModelCard } from "../model-card/model-card.js";

/** A special token as tokenizer_config.json writes it: a plain string or an AddedToken object. */
export type SpecialTokenValue = string | { content: string } | null | undefined;

/** A named chat template, as newer tokenizer_config.json files list them (`default`, `tool_use`, ...). */
export interface NamedChatTemplate {
  name: string;
  template: string;
}

/**
 * The tokenizer_config.json fields the tokenizer, chat template and
 * preprocessor read. Other fields are kept and passed to the HF tokenizer.
 */
export interface TokenizerConfig {
  bos_token?: SpecialTokenValue;
  eos_token?: SpecialTokenValue;
  pad_token?: SpecialTokenValue;
  unk_token?: SpecialTokenValue;
  add_bos_token?: boolean;
  add_eos_token?: boolean;
  chat_template?: string | NamedChatTemplate[];
  additional_special_tokens?: SpecialTokenValue[];
  clean_up_tokenization_spaces?: boolean;
  model_max_length?: number;
  [field: string]: unknown;
}

/** The text of a special token field, whichever form it takes. */
export function specialTokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

/**
 * Picks the chat template from a config: a plain string, or from a named list
 * the `tool_use` template when tools are given and one exists, else `default`
 * (what transformers' `apply_chat_template` does).
 */
export function chatTemplateFromConfig(config: TokenizerConfig, options: { tools?: boolean } = {}): string | undefined {
  const value = config.chat_template;
  if (typeof value === "string") return value;
  if (!Array.isArray(value)) return undefined;
  const byName = new Map(value.map((entry) => [entry.name, entry.template]));
  if (options.tools && byName.has("tool_use")) return byName.get("tool_use");
  return byName.get("default");
}

/** The card fields a worker fills in from its tokenizer_config.json (everything but `eosTokenIds`). */
export interface TokenizerCardFields {
  chatTemplate?: string;
  bosToken?: string;
  eosToken?: string;
  addBosToken?: boolean;
}

/** Card fields from a tokenizer_config.json, for a worker building its model card. */
export function cardFieldsFromTokenizerConfig(config: TokenizerConfig): TokenizerCardFields {
  const fields: TokenizerCardFields = {};
  const chatTemplate = chatTemplateFromConfig(config);
  if (chatTemplate !== undefined) fields.chatTemplate = chatTemplate;
  const bosToken = specialTokenContent(config.bos_token);
  if (bosToken !== undefined) fields.bosToken = bosToken;
  const eosToken = specialTokenContent(config.eos_token);
  if (eosToken !== undefined) fields.eosToken = eosToken;
  if (typeof config.add_bos_token === "boolean") fields.addBosToken = config.add_bos_token;
  return fields;
}

/**
 * The tokenizer_config.json a frontend rebuilds from a model card (the card
 * carries tokenizer.json and these fields, not the config file itself).
 * Tokenization spaces are never cleaned up, matching incremental decoding.
 */
export function tokenizerConfigFromCard(
  card: Pick<ModelCard, "chatTemplate" | "bosToken" | "eosToken" | "addBosToken">,
): TokenizerConfig {
  const config: TokenizerConfig = {
    bos_token: card.bosToken ?? null,
    eos_token: card.eosToken ?? null,
    clean_up_tokenization_spaces: false,
  };
  if (card.addBosToken !== undefined) config.add_bos_token = card.addBosToken;
  if (card.chatTemplate !== undefined) config.chat_template = card.chatTemplate;
  return config;
}
