import { TdistError } from "../errors/tdist-error.js";
import { abortPromise } from "../util/abort.js";
import type { KvOffer } from "./kv-offer.js";

/**
 * The same-process hand-off: the receiver pulls the sender's source chunks
 * directly, one at a time, so backpressure is the pull itself and nothing is
 * copied or buffered. `signal` (the receiver's) ends the pending pull.
 */
export async function* localKvFetch(offer: KvOffer, signal: AbortSignal): AsyncGenerator<Uint8Array, void, undefined> {
  const stream = offer.stream();
  const aborted = abortPromise(signal);
  try {
    for (;;) {
      const next = await Promise.race([stream.next(), aborted.promise]);
      if (next.done) return;
      yield next.value;
    }
  } finally {
    aborted.dispose();
    // Resumes a pending pull to its end or ends the stream: the offer settles as failed unless it was sent.
    if (signal.aborted) offer.abortTransfer(new TdistError("kv_transfer_failed", "the receiver cancelled the fetch"));
    void stream.return(undefined).catch(() => {});
  }
}
