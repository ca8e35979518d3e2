import type { Socket } from "node:net";
import { hostname } from "node:os";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import { TcpListener } from "../request-plane/tcp-listener.js";
import type { TcpTls } from "../request-plane/tcp-tls.js";
import type { KvOffer } from "./kv-offer.js";
import { senderFailure } from "./kv-offer.js";
import { KvFrameType, KvRequestReader, kvErrorFrame, kvFrameHeader } from "./kv-transfer-wire.js";

export interface TcpKvListenerOptions {
  host: string;
  port: number;
  advertiseHost: string;
  /** How long an accepted connection may take to send its request. */
  requestTimeoutMs: number;
  /** Mutual TLS (the request plane's `TDIST_TCP_TLS_*`): fetchers without a certificate from the CA are refused. */
  tls?: TcpTls | undefined;
  logger: Logger;
  /** Claims the offer a request names; undefined when it is unknown, taken or released. */
  claim(transferId: string): KvOffer | undefined;
}

/**
 * The sending side over TCP: its own listener, separate from the request
 * plane, serving one fetch per connection. Chunks are written as the socket
 * drains, so a slow receiver (TCP flow control) pauses the source.
 */
export class TcpKvListener {
  private listener: TcpListener | undefined;
  private listening: Promise<string> | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly options: TcpKvListenerOptions) {}

  /** The advertised `host:port`, once listening. */
  listen(): Promise<string> {
    this.listening ??= (async () => {
      const listener = new TcpListener({
        host: this.options.host,
        port: this.options.port,
        tls: this.options.tls,
        onSocket: (socket) => this.accept(socket),
        refuse: (socket, error) => socket.write(kvErrorFrame(error)),
        name: "KV transfer",
        logger: this.options.logger,
      });
      this.listener = listener;
      const port = await listener.listen();
      return `${this.advertisedHost()}:${port}`;
    })();
    return this.listening;
  }

  async close(): Promise<void> {
    const listener = this.listener;
    this.listener = undefined;
    for (const socket of this.sockets) socket.destroy();
    await listener?.close();
  }

  private advertisedHost(): string {
    const { advertiseHost, host } = this.options;
    if (advertiseHost) return advertiseHost;
    if (host === "0.0.0.0" || host === "::") return hostname();
    return host.includes(":") ? `[${host}]` : host;
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
    const reader = new KvRequestReader();
    const timer = setTimeout(() => socket.destroy(), this.options.requestTimeoutMs);
    const onData = (chunk: Buffer): void => {
      let transferId: string | undefined;
      try {
        transferId = reader.push(chunk);
      } catch (err) {
        clearTimeout(timer);
        socket.end(kvErrorFrame(TdistError.wrap(err, "protocol_error")));
        return;
      }
      if (transferId === undefined) return;
      clearTimeout(timer);
      socket.off("data", onData);
      // Keep reading (and dropping) so a receiver's close is seen at once.
      socket.on("data", () => {});
      const offer = this.options.claim(transferId);
      if (offer === undefined) {
        socket.end(
          kvErrorFrame(
            new TdistError(
              "kv_transfer_not_found",
              `KV transfer ${transferId} is not offered here (expired or fetched)`,
            ),
          ),
        );
        return;
      }
      void this.send(offer, socket);
    };
    socket.on("data", onData);
    socket.once("close", () => clearTimeout(timer));
  }

  private async send(offer: KvOffer, socket: Socket): Promise<void> {
    const onClose = (): void => offer.abortTransfer(new TdistError("kv_transfer_failed", "the receiver disconnected"));
    socket.once("close", onClose);
    try {
      for await (const chunk of offer.stream()) {
        socket.cork();
        socket.write(kvFrameHeader(KvFrameType.DATA, chunk.byteLength));
        const flushed = socket.write(chunk);
        socket.uncork();
        if (!flushed) await drained(socket);
      }
      socket.end(kvFrameHeader(KvFrameType.END, 0));
    } catch (err) {
      if (!socket.destroyed) socket.end(kvErrorFrame(senderFailure(err)));
      this.options.logger.debug({ err, transferId: offer.handle.transferId }, "KV transfer ended early");
    } finally {
      socket.off("close", onClose);
    }
  }
}

function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) {
      resolve();
      return;
    }
    const done = (): void => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}
