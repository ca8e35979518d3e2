import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from "node:tls";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import { type TcpTls, TLS_HANDSHAKE_BYTE } from "./tcp-tls.js";

export interface TcpListenerOptions {
  host: string;
  port: number;
  /** Mutual TLS when set: peers without a certificate from the CA are refused. */
  tls: TcpTls | undefined;
  /** A connection ready for the protocol: plaintext, or TLS with a verified peer. */
  onSocket(socket: Socket): void;
  /**
   * Tells a refused peer why, in the listener's own protocol (an ERROR frame):
   * a plaintext peer of a TLS listener, or a TLS peer whose certificate the CA
   * did not sign. Nothing the peer sent is read; the socket closes after.
   */
  refuse(socket: Socket, error: TdistError): void;
  /** Names the listener in log lines ("request plane", "KV transfer"). */
  name: string;
  logger: Logger;
}

/** How long a peer may take over the TLS handshake. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** How long a refused peer has to read the refusal before its socket is destroyed. */
const REFUSAL_LINGER_MS = 1_000;

/**
 * One listening TCP socket, plaintext or mutual TLS. With TLS the first byte
 * of each connection is looked at before the handshake: a plaintext peer (a
 * process without the TLS settings) is answered in plaintext that TLS is
 * required. The handshake itself accepts any client certificate so that a
 * peer with none or a stranger's gets a typed refusal over TLS instead of a
 * dropped connection (TLS 1.3 clients would otherwise think they connected);
 * only verified peers reach `onSocket`.
 */
export class TcpListener {
  private readonly server: Server;
  private readonly tlsServer: TlsServer | undefined;
  /** Connections not yet handed to `onSocket`, by remote address and port. */
  private readonly pending = new Map<string, Socket>();

  constructor(private readonly options: TcpListenerOptions) {
    const { tls, onSocket } = options;
    if (tls === undefined) {
      this.server = createServer({ noDelay: true }, onSocket);
      return;
    }
    const tlsServer = createTlsServer({
      ...tls.serverOptions(),
      rejectUnauthorized: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    });
    this.tlsServer = tlsServer;
    tlsServer.on("secureConnection", (socket: TLSSocket) => this.onSecure(socket));
    tlsServer.on("tlsClientError", (err, socket) => {
      this.options.logger.warn(
        { remote: socket.remoteAddress, reason: (err as NodeJS.ErrnoException).code ?? err.message },
        `${this.options.name}: TLS handshake failed`,
      );
      socket.destroy();
    });
    this.server = createServer({ noDelay: true }, (socket) => this.sniff(socket));
  }

  /** Listens; resolves with the bound port. */
  listen(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const server = this.server;
      server.once("error", (err) =>
        reject(TdistError.wrap(err, "cannot_connect", `${this.options.name} cannot listen`)),
      );
      server.listen(this.options.port, this.options.host, () => resolve((server.address() as AddressInfo).port));
    });
  }

  /** Stops listening and drops connections not yet handed over; resolves when every connection has closed. */
  close(): Promise<void> {
    for (const socket of this.pending.values()) socket.destroy();
    this.pending.clear();
    return new Promise<void>((resolve) => {
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
    });
  }

  private sniff(socket: Socket): void {
    const key = `${socket.remoteAddress}:${socket.remotePort}`;
    this.pending.set(key, socket);
    socket.on("error", () => {});
    socket.once("close", () => {
      if (this.pending.get(key) === socket) this.pending.delete(key);
    });
    socket.once("data", (chunk: Buffer) => {
      socket.pause();
      if (chunk[0] !== TLS_HANDSHAKE_BYTE) {
        this.refuse(socket, new TdistError("cannot_connect", `${this.options.name} requires TLS: ${TLS_HOW}`));
        return;
      }
      // The TLS socket reads the byte put back first.
      socket.unshift(chunk);
      this.tlsServer?.emit("connection", socket);
    });
  }

  private onSecure(socket: TLSSocket): void {
    const key = `${socket.remoteAddress}:${socket.remotePort}`;
    this.pending.delete(key);
    if (!socket.authorized) {
      const reason = String(socket.authorizationError ?? "no certificate");
      this.refuse(
        socket,
        new TdistError(
          "cannot_connect",
          `${this.options.name} refused this process's TLS client certificate (${reason}): ${TLS_HOW}`,
        ),
      );
      return;
    }
    socket.setNoDelay(true);
    this.options.onSocket(socket);
  }

  private refuse(socket: Socket, error: TdistError): void {
    this.options.logger.warn(
      { remote: socket.remoteAddress, reason: error.message },
      `${this.options.name}: refused a connection`,
    );
    socket.on("error", () => {});
    this.options.refuse(socket, error);
    socket.end();
    // Drop what the peer sends; it is never parsed.
    socket.resume();
    setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
  }
}

const TLS_HOW =
  "every process of the cluster needs TDIST_TCP_TLS_CERT and TDIST_TCP_TLS_KEY from the CA in TDIST_TCP_TLS_CA";
