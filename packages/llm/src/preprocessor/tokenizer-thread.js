// @ts-check
// The tokenizer worker thread's script. Plain JavaScript (type-checked from
// JSDoc): Node starts worker threads without the TypeScript loader the tests
// use, so this file runs as it is from src and, copied by the build, from dist.
// It imports only the HF tokenizer and the pre-tokenizer speedups, so its ids
// are the ones `Tokenizer.encode` computes on the main thread.
import { parentPort, workerData } from "node:worker_threads";
import { Tokenizer } from "@huggingface/tokenizers";
import { speedUpPreTokenizers } from "./pre-tokenizer-speedups.js";

/**
 * @typedef {{ tokenizerJson: string; hfConfig: Record<string, unknown> }} ThreadData
 * @typedef {{ id: number; text: string; addSpecialTokens: boolean }} EncodeJob
 */

const port = parentPort;
if (port === null) throw new Error("tokenizer-thread.js runs as a worker thread");
const data = /** @type {ThreadData} */ (workerData);
const hf = new Tokenizer(JSON.parse(data.tokenizerJson), data.hfConfig);
speedUpPreTokenizers(hf);
// Until this arrives the thread is still building its vocabulary: a deadline then is not the prompt's doing.
port.postMessage({ ready: true });

port.on("message", (/** @type {EncodeJob} */ job) => {
  try {
    /** @type {number[]} */
    const ids = hf.encode(job.text, { add_special_tokens: job.addSpecialTokens }).ids;
    // Ids go back in a transferred buffer rather than as a cloned array.
    const buffer = Uint32Array.from(ids);
    port.postMessage({ id: job.id, ids: buffer }, [buffer.buffer]);
  } catch (err) {
    port.postMessage({ id: job.id, error: err instanceof Error ? err.message : String(err) });
  }
});
