import { TdistError } from "@tdist/runtime";
import { WORKER_ROLES, type WorkerRole } from "../protocol/disaggregation.js";

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
}

export function modelCardPrefix(): string {
  return "v1/models/";
}

export function modelCardKey(namespace: string, component: string, endpoint: string, instanceId: string): string {
  return `v1/models/${namespace}/${component}/${endpoint}/${instanceId}`;
}

/** Validates a card read from discovery; throws `bad_request` naming the bad field. */
export function parseModelCard(text: string): ModelCard {
  let card: Partial<ModelCard>;
  try {
    card = JSON.parse(text) as Partial<ModelCard>;
  } catch (err) {
    throw TdistError.wrap(err, "bad_request", "model card is not JSON");
  }
  const fail = (field: string): never => {
    throw new TdistError("bad_request", `model card field ${field} is missing or invalid`);
  };
  if (typeof card.name !== "string" || card.name.length === 0) fail("name");
  if (typeof card.engine !== "string") fail("engine");
  if (typeof card.tokenizer?.sha256 !== "string" || typeof card.tokenizer.source?.kind !== "string") fail("tokenizer");
  if (!Array.isArray(card.eosTokenIds)) fail("eosTokenIds");
  if (!Number.isInteger(card.contextLength) || (card.contextLength as number) <= 0) fail("contextLength");
  if (!Number.isInteger(card.kvBlockSize) || (card.kvBlockSize as number) <= 0) fail("kvBlockSize");
  if (typeof card.limits !== "object" || card.limits === null) fail("limits");
  if (card.role !== undefined && !(WORKER_ROLES as readonly string[]).includes(card.role)) fail("role");
  if (card.migrationLimit !== undefined && !isNonNegativeInteger(card.migrationLimit)) fail("migrationLimit");
  return card as ModelCard;
}

function isNonNegativeInteger(value: unknown): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 1_000;
}
