import type { Socket } from "node:net";
import { TdistError } from "../errors/tdist-error.js";
import { dialTcp } from "../request-plane/tcp-dial.js";
import { type TcpTls, tlsFailureReason } from "../request-plane/tcp-tls.js";
import { encodeKvRequest, KvFrameReader } from "./kv-transfer-wire.js";

/**
 * The receiving side over TCP: dials the sender's listener, asks for one
 * transfer and yields DATA as it arrives. The socket is read only as fast as
 * the consumer pulls, so a slow consumer fills the TCP window and pauses the
 * sender. Ends after END; throws the sender's ERROR, or `kv_transfer_failed`
 * when the connection ends first. `signal` destroys the socket (the caller
 * turns that into its reason). With `tls` the connection is mutual TLS; a
 * sender that refuses this certificate answers `cannot_connect`.
 */
export async function* tcpKvFetch(
  address: string,
  transferId: string,
  connectTimeoutMs: number,
  signal: AbortSignal,
  tls?: TcpTls,
): AsyncGenerator<Uint8Array, void, undefined> {
  const socket = await dial(address, connectTimeoutMs, signal, tls);
  const onAbort = (): void => {
    socket.destroy();
  };
  signal.addEventListener("abort", onAbort, { once: true });
  let received = 0;
  try {
    socket.write(encodeKvRequest(transferId));
    const reader = new KvFrameReader();
    for await (const chunk of socket as AsyncIterable<Buffer>) {
      for (const event of reader.push(chunk)) {
        if (event.kind === "error") throw event.error;
        if (event.kind === "end") return;
        received += event.bytes.byteLength;
        yield event.bytes;
      }
    }
    throw new TdistError("kv_transfer_failed", `KV transfer ${transferId} truncated after ${received} bytes`);
  } catch (err) {
    if (err instanceof TdistError) throw err;
    const tlsReason = received === 0 ? tlsFailureReason(err) : undefined;
    if (tlsReason !== undefined) {
      throw new TdistError("cannot_connect", `TLS with KV transfer sender at ${address} failed: ${tlsReason}`, {
        cause: err,
      });
    }
    throw TdistError.wrap(err, "kv_transfer_failed", `KV transfer ${transferId} lost after ${received} bytes`);
  } finally {
    signal.removeEventListener("abort", onAbort);
    socket.destroy();
  }
}

function dial(address: string, timeoutMs: number, signal: AbortSignal, tls: TcpTls | undefined): Promise<Socket> {
  const separator = address.lastIndexOf(":");
  const host = address.slice(0, separator).replace(/^\[(.*)\]$/, "$1");
  const port = Number(address.slice(separator + 1));
  if (separator <= 0 || !Number.isInteger(port) || port <= 0 || port > 65_535) {
    return Promise.reject(new TdistError("bad_request", `bad KV transfer address ${JSON.stringify(address)}`));
  }
  return new Promise<Socket>((resolve, reject) => {
    const { socket, readyEvent } = dialTcp(host, port, tls);
    const fail = (error: TdistError): void => {
      cleanup();
      socket.destroy();
      reject(error);
    };
    const onError = (err: Error): void => {
      const tlsReason = tlsFailureReason(err);
      fail(
        tlsReason === undefined
          ? TdistError.wrap(err, "cannot_connect", `cannot reach KV transfer sender at ${address}`)
          : new TdistError("cannot_connect", `TLS with KV transfer sender at ${address} failed: ${tlsReason}`, {
              cause: err,
            }),
      );
    };
    const onAbort = (): void => fail(new TdistError("cancelled", "KV transfer fetch aborted while connecting"));
    const timer = setTimeout(
      () =>
        fail(new TdistError("cannot_connect", `KV transfer sender at ${address} did not answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off("error", onError);
      signal.removeEventListener("abort", onAbort);
    };
    socket.once("error", onError);
    socket.once(readyEvent, () => {
      cleanup();
      socket.on("error", () => {});
      resolve(socket);
    });
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}
