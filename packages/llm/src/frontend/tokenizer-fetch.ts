import { type DistributedRuntime, direct, TdistError } from "@tdist/runtime";
import type { ModelCard } from "../model-card/model-card.js";
import { sha256Hex } from "../worker/serve-model.js";

/**
 * Gets a card's tokenizer.json without a shared filesystem: from the card
 * itself, or streamed from the worker that registered it. Either way the
 * bytes must match the card's sha256.
 */
export async function fetchTokenizerJson(
  runtime: DistributedRuntime,
  card: ModelCard,
  instanceId: string,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const source = card.tokenizer.source;
  let json: string;
  if (source.kind === "inline") {
    json = source.tokenizerJson;
  } else {
    const client = await runtime
      .namespace(source.namespace)
      .component(source.component)
      .endpoint(source.endpoint)
      .client<{ sha256: string }, string>();
    try {
      await client.waitForInstances({
        timeoutMs: options.timeoutMs ?? 10_000,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const parts: string[] = [];
      const stream = client.generate(
        { sha256: card.tokenizer.sha256 },
        {
          router: direct(instanceId),
          timeoutMs: options.timeoutMs ?? 30_000,
          ...(options.signal ? { signal: options.signal } : {}),
        },
      );
      for await (const part of stream) parts.push(part);
      json = parts.join("");
    } finally {
      await client.close();
    }
  }
  const actual = sha256Hex(json);
  if (actual !== card.tokenizer.sha256) {
    throw new TdistError(
      "bad_request",
      `tokenizer for model ${card.name} failed verification: sha256 ${actual}, card says ${card.tokenizer.sha256}`,
    );
  }
  return json;
}
