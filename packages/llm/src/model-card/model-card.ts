import { TdistError, validateName } from "@tdist/runtime";
import { WORKER_ROLES, type WorkerRole } from "../protocol/disaggregation.js";

/**
 * What a worker's engine can do beyond plain generation. The frontend sends
 * a request that needs one only to workers whose card lists it, and answers
 * 400 naming the capability when no worker of the model has it:
 * - `tools`: constrained decoding for `tool_choice` `required` or a named
 *   function (parsing tool calls from output needs no capability);
 * - `structured_output`: `PreprocessedRequest.guided` (JSON schema, JSON
 *   object, regex, choice);
 * - `embeddings`: serves the `embed` endpoint (`/v1/embeddings`);
 * - `prompt_logprobs`: `output.promptLogprobs` (`echo` with `logprobs`).
 */
export const MODEL_CAPABILITIES = ["tools", "structured_output", "embeddings", "prompt_logprobs"] as const;
export type ModelCapability = (typeof MODEL_CAPABILITIES)[number];

/**
 * Where the frontend gets a model's tokenizer without a shared filesystem:
 * inline in the card (small tokenizers) or fetched from the worker's
 * `tokenizer` endpoint (large ones). Either way verified by sha256.
 */
export type TokenizerSource =
  | { kind: "inline"; tokenizerJson: string }
  | { kind: "endpoint"; namespace: string; component: string; endpoint: string };

export interface ModelCard {
  /** Served model name: what clients put in `model`. */
  name: string;
  /** Engine kind, for status output (`echo`, `mocker`, `llamacpp`, ...). */
  engine: string;
  tokenizer: {
    source: TokenizerSource;
    /** sha256 hex of tokenizer.json's bytes. */
    sha256: string;
  };
  /** Jinja chat template (from tokenizer_config.json or the GGUF), when the model has one. */
  chatTemplate?: string;
  /** tokenizer_config.json fields the template and preprocessor use. */
  bosToken?: string;
  eosToken?: string;
  addBosToken?: boolean;
  eosTokenIds: number[];
  contextLength: number;
  kvBlockSize: number;
  limits: { totalKvBlocks?: number; maxSequences?: number };
  /** Disaggregated serving role; absent means `aggregated`. */
  role?: WorkerRole;
  /**
   * How many times a frontend may move a request for this model to another
   * worker when its worker fails (`--migration-limit`; absent: 3; 0: never).
   * A frontend's own `--migration-limit` overrides it.
   */
  migrationLimit?: number;
  /** What the engine can do beyond generation (absent: nothing). */
  capabilities?: ModelCapability[];
  /** Tool-call parser for this model's output (`--tool-call-parser`: `hermes`, `llama3_json`, `mistral`, `qwen3_coder`). */
  toolCallParser?: string;
  /** Reasoning parser for this model's output (`--reasoning-parser`: `qwen3`, `deepseek_r1`). */
  reasoningParser?: string;
}

export function modelCardPrefix(): string {
  return "v1/models/";
}

export function modelCardKey(namespace: string, component: string, endpoint: string, instanceId: string): string {
  return `v1/models/${namespace}/${component}/${endpoint}/${instanceId}`;
}

// Far above any real card's strings, low enough that a hostile one is refused before it is logged or labelled.
const MAX_NAME_LENGTH = 1024;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * Validates a card read from discovery; throws `bad_request` naming the bad
 * field. Every field the frontend reads is checked for type and range, since
 * a card comes from another process (or whoever can write to the store) and
 * an accepted one decides where tokenizers are fetched from and how prompts
 * are cut into KV blocks.
 */
export function parseModelCard(text: string): ModelCard {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw TdistError.wrap(err, "bad_request", "model card is not JSON");
  }
  const fail = (field: string): never => {
    throw new TdistError("bad_request", `model card field ${field} is missing or invalid`);
  };
  if (!isPlainObject(parsed)) fail("(the card is not a JSON object)");
  const card = parsed as Partial<Record<keyof ModelCard, unknown>>;
  if (typeof card.name !== "string" || card.name.length === 0 || card.name.length > MAX_NAME_LENGTH) fail("name");
  if (typeof card.engine !== "string" || card.engine.length > MAX_NAME_LENGTH) fail("engine");
  if (!isPlainObject(card.tokenizer)) fail("tokenizer");
  const tokenizer = card.tokenizer as { sha256?: unknown; source?: unknown };
  if (typeof tokenizer.sha256 !== "string" || !SHA256_HEX.test(tokenizer.sha256)) fail("tokenizer.sha256");
  if (!isTokenizerSource(tokenizer.source)) fail("tokenizer.source");
  if (!Array.isArray(card.eosTokenIds) || !card.eosTokenIds.every(isTokenId)) fail("eosTokenIds");
  if (!isPositiveInteger(card.contextLength)) fail("contextLength");
  if (!isPositiveInteger(card.kvBlockSize)) fail("kvBlockSize");
  if (!isPlainObject(card.limits)) fail("limits");
  const limits = card.limits as { totalKvBlocks?: unknown; maxSequences?: unknown };
  if (limits.totalKvBlocks !== undefined && !isPositiveInteger(limits.totalKvBlocks)) fail("limits.totalKvBlocks");
  if (limits.maxSequences !== undefined && !isPositiveInteger(limits.maxSequences)) fail("limits.maxSequences");
  for (const field of ["chatTemplate", "bosToken", "eosToken"] as const) {
    if (card[field] !== undefined && typeof card[field] !== "string") fail(field);
  }
  if (card.addBosToken !== undefined && typeof card.addBosToken !== "boolean") fail("addBosToken");
  if (card.role !== undefined && !(WORKER_ROLES as readonly unknown[]).includes(card.role)) fail("role");
  if (card.migrationLimit !== undefined && !isNonNegativeInteger(card.migrationLimit)) fail("migrationLimit");
  if (
    card.capabilities !== undefined &&
    !(
      Array.isArray(card.capabilities) &&
      card.capabilities.every((item) => (MODEL_CAPABILITIES as readonly unknown[]).includes(item))
    )
  ) {
    fail("capabilities");
  }
  for (const field of ["toolCallParser", "reasoningParser"] as const) {
    const value = card[field];
    if (value !== undefined && (typeof value !== "string" || value.length === 0 || value.length > 64)) fail(field);
  }
  return card as ModelCard;
}

function isTokenizerSource(value: unknown): value is TokenizerSource {
  if (!isPlainObject(value)) return false;
  const source = value as Partial<Record<string, unknown>>;
  if (source.kind === "inline") return typeof source.tokenizerJson === "string";
  if (source.kind !== "endpoint") return false;
  try {
    validateName("namespace", source.namespace);
    validateName("component", source.component);
    validateName("endpoint", source.endpoint);
    return true;
  } catch {
    return false;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isPositiveInteger(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

function isTokenId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isNonNegativeInteger(value: unknown): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 1_000;
}
