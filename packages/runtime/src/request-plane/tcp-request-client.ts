import { TdistError } from "../errors/tdist-error.js";
import type { ResponseStream } from "../handler.js";
import type { Logger } from "../logger.js";
import type { Codec } from "./codec.js";
import type { OpenStreamOptions, RequestPlaneClient, TransportAddress } from "./request-plane.js";
import { TcpConnection } from "./tcp-connection.js";
import type { TcpTls } from "./tcp-tls.js";

export interface TcpRequestClientOptions {
  maxFrameBytes: number;
  connectTimeoutMs: number;
  /** PING interval while a connection has open streams; 0 disables (`TDIST_TCP_HEARTBEAT_MS`). */
  heartbeatMs?: number;
  streamWindow: number;
  codec: Codec;
  logger: Logger;
  /** Mutual TLS to every peer (`TDIST_TCP_TLS_*`). */
  tls?: TcpTls | undefined;
}

/**
 * Opens streams over one connection per peer address, reconnecting on the
 * next request after a connection is lost.
 */
export class TcpRequestClient implements RequestPlaneClient {
  readonly kind = "tcp" as const;
  private readonly connections = new Map<string, TcpConnection>();
  private readonly disconnectListeners = new Set<(address: TransportAddress) => void>();

  constructor(private readonly options: TcpRequestClientOptions) {}

  open<T>(address: TransportAddress, request: unknown, options: OpenStreamOptions): ResponseStream<T> {
    if (!("tcp" in address)) throw new TdistError("bad_request", "TCP request plane cannot reach a NATS address");
    return this.connection(address.tcp).open<T>(
      options.path,
      request,
      options.instanceId,
      options.context,
      options.deadline,
      options,
    );
  }

  onDisconnect(listener: (address: TransportAddress) => void): () => void {
    this.disconnectListeners.add(listener);
    return () => this.disconnectListeners.delete(listener);
  }

  async close(): Promise<void> {
    for (const connection of this.connections.values()) connection.close();
    this.connections.clear();
  }

  private connection(address: string): TcpConnection {
    const existing = this.connections.get(address);
    if (existing && !existing.isClosed) return existing;
    const connection = new TcpConnection({ ...this.options, address });
    this.connections.set(address, connection);
    connection.onClose((error) => {
      if (this.connections.get(address) === connection) this.connections.delete(address);
      if (error.code === "shutting_down") return;
      this.options.logger.debug({ address, err: error }, "request-plane connection lost");
      for (const listener of this.disconnectListeners) listener({ tcp: address });
    });
    return connection;
  }
}
