import { builtinModelAssets, type ModelAssets, type ServedModel, serveModel } from "@tdist/llm";
import type { DistributedRuntime } from "@tdist/runtime";
import { ECHO_CHAT_TEMPLATE } from "./echo-chat-template.js";
import { createEchoEngine } from "./echo-engine.js";

export interface EchoWorkerOptions {
  namespace: string;
  component?: string;
  /** Served model name. Default "echo". */
  modelName?: string;
  delayMsPerToken?: number;
  /** Migrations a frontend gives a request to this model when its worker fails (the card's `migrationLimit`). */
  migrationLimit?: number;
  /** Tokenizer; the built-in Qwen3 assets by default. Their chat template is replaced by `ECHO_CHAT_TEMPLATE`. */
  assets?: ModelAssets;
}

/**
 * Serves the echo engine as a model worker: streams each prompt's tokens
 * back; a chat request gets its last user message's text back.
 */
export async function serveEchoWorker(runtime: DistributedRuntime, options: EchoWorkerOptions): Promise<ServedModel> {
  const assets = options.assets ?? builtinModelAssets();
  return serveModel(runtime, {
    namespace: options.namespace,
    ...(options.component ? { component: options.component } : {}),
    tokenizerJson: assets.tokenizerJson,
    engine: createEchoEngine({ delayMsPerToken: options.delayMsPerToken ?? 0 }),
    card: {
      name: options.modelName ?? "echo",
      engine: "echo",
      ...assets.cardFields,
      chatTemplate: ECHO_CHAT_TEMPLATE,
      kvBlockSize: 16,
      limits: {},
      ...(options.migrationLimit === undefined ? {} : { migrationLimit: options.migrationLimit }),
    },
  });
}
