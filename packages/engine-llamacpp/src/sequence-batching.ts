/**
 * How the llama.cpp engine fills each decode: continuous batching across the
 * context's sequences, in an order llama.cpp 0.4.0 (node-llama-cpp 3.21.1)
 * maps back correctly.
 *
 * node-llama-cpp gives each sequence its own KV stream; llama.cpp then splits
 * a batch into ubatches with sequence ids in ascending order, and the logits
 * come back in that order, while node-llama-cpp reads them at the positions
 * it added the tokens at. A batch added as sequences [3, 0, 1] handed
 * sequence 0 the logits of sequence 3 (measured: staggered greedy streams
 * swapped distributions with each other). Adding every batch in ascending
 * sequence-id order makes the two orders agree: 8 staggered greedy streams
 * then give exactly their sequential tokens, at about 1.8x the tokens/s.
 *
 * A batch also has to fit in one ubatch: llama.cpp splits a batch whose
 * sequences bring different token counts (a prompt beside decodes) into
 * several ubatches, and their outputs come back ubatch by ubatch, again out
 * of the order node-llama-cpp expects (measured: first tokens of prompts
 * that joined running decodes were wrong). So a batch is either every
 * running decode (one token each, in one ubatch) or one prompt's tokens
 * alone, alternating while both wait: a new prompt delays the running
 * streams by one prefill step, and running streams never starve a prompt.
 */
import type { BatchItem, LlamaContext, PrioritizedBatchItem, Token } from "node-llama-cpp";

/** The part of node-llama-cpp's queued decode the ordering needs (3.x internals, checked on every batch). */
interface QueuedDecode {
  sequenceId: number;
  tokens: readonly Token[];
}

type PrioritizationInput = { items: readonly BatchItem[]; size: number };

/** A batch of the first queued item only: each decode serves one sequence (the safe fallback). */
export function oneSequencePerDecode({ items, size }: PrioritizationInput): PrioritizedBatchItem[] {
  const item = items[0];
  return item === undefined ? [] : [{ item, processAmount: Math.min(item.tokens.length, size) }];
}

/**
 * The batch prioritization strategy of a multi-sequence context. Create it
 * before the context (its strategy goes into `createContext`), then
 * `attach` the context.
 *
 * @example
 * const batching = new SequenceBatching();
 * const context = await model.createContext({ sequences: 8, batching: { itemPrioritizationStrategy: batching.prioritize } });
 * batching.attach(context);
 */
export class SequenceBatching {
  #context: LlamaContext | undefined;
  #fallbacks = 0;
  #lastWasDecode = false;

  attach(context: LlamaContext): void {
    this.#context = context;
  }

  /** Batches that fell back to one sequence because the library's queue did not look as expected. */
  get fallbacks(): number {
    return this.#fallbacks;
  }

  readonly prioritize = (input: PrioritizationInput): PrioritizedBatchItem[] => {
    const sequenceIds = this.#sequenceIds(input.items);
    if (sequenceIds === undefined) {
      if (input.items.length > 1) this.#fallbacks++;
      return oneSequencePerDecode(input);
    }
    const decodes: PrioritizedBatchItem[] = [];
    let prompt: BatchItem | undefined;
    for (const item of input.items) {
      if (item.tokens.length === 1) {
        if (decodes.length < input.size) decodes.push({ item, processAmount: 1 });
      } else if (prompt === undefined) {
        prompt = item;
      }
    }
    if (prompt !== undefined && (decodes.length === 0 || this.#lastWasDecode)) {
      this.#lastWasDecode = false;
      return [{ item: prompt, processAmount: Math.min(prompt.tokens.length, input.size) }];
    }
    this.#lastWasDecode = true;
    decodes.sort((a, b) => (sequenceIds.get(a.item) ?? 0) - (sequenceIds.get(b.item) ?? 0));
    return decodes;
  };

  /** Each item's sequence id, read from the context's queue (items are built from it in order); undefined if it does not match. */
  #sequenceIds(items: readonly BatchItem[]): Map<BatchItem, number> | undefined {
    const queue = (this.#context as unknown as { _queuedDecodes?: unknown } | undefined)?._queuedDecodes;
    if (!Array.isArray(queue) || queue.length !== items.length) return undefined;
    const ids = new Map<BatchItem, number>();
    for (let i = 0; i < items.length; i++) {
      const queued = queue[i] as Partial<QueuedDecode> | undefined;
      const item = items[i] as BatchItem;
      if (typeof queued?.sequenceId !== "number" || queued.tokens !== item.tokens) return undefined;
      ids.set(item, queued.sequenceId);
    }
    return ids;
  }
}
