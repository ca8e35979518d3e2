import type { Socket } from "node:net";
import { hostname } from "node:os";
import { TdistError, type WireError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import type { Codec } from "./codec.js";
import {
  decodeRequestPayload,
  encodeStringFrame,
  FRAME_HEADER_BYTES,
  type Frame,
  FrameParser,
  FrameType,
  type RequestHead,
} from "./frame.js";
import { FrameWriter } from "./frame-writer.js";
import { HandlerRun, type ResponseSink } from "./handler-run.js";
import { admitRequest } from "./request-admission.js";
import type { RequestPlaneServer, ServedHandler, TransportAddress } from "./request-plane.js";
import { TcpListener } from "./tcp-listener.js";
import type { TcpTls } from "./tcp-tls.js";

export interface TcpServerOptions {
  host: string;
  port: number;
  /** Host other processes dial; defaults to `host` (the hostname when `host` is a wildcard). */
  advertiseHost?: string;
  maxFrameBytes: number;
  codec: Codec;
  logger: Logger;
  /** Mutual TLS (`TDIST_TCP_TLS_*`): callers without a certificate from the CA are refused with `cannot_connect`. */
  tls?: TcpTls | undefined;
}

/**
 * The TCP request plane's server: one listening socket per runtime, many
 * multiplexed streams per connection, credit-based flow control per stream.
 */
export class TcpRequestServer implements RequestPlaneServer {
  readonly kind = "tcp" as const;
  private readonly handlers = new Map<string, ServedHandler>();
  private readonly connections = new Set<ServerConnection>();
  private listener: TcpListener | undefined;
  private listening: Promise<string> | undefined;
  private accepting = true;

  constructor(private readonly options: TcpServerOptions) {}

  async register(entry: ServedHandler): Promise<TransportAddress> {
    this.handlers.set(entry.path, entry);
    return { tcp: await this.listen() };
  }

  unregister(path: string): void {
    this.handlers.delete(path);
  }

  lookup(path: string): ServedHandler | undefined {
    return this.handlers.get(path);
  }

  get isAccepting(): boolean {
    return this.accepting;
  }

  stopAccepting(): void {
    this.accepting = false;
  }

  /** The advertised `host:port`, once listening. */
  async listen(): Promise<string> {
    this.listening ??= (async () => {
      const listener = new TcpListener({
        host: this.options.host,
        port: this.options.port,
        tls: this.options.tls,
        onSocket: (socket) => this.accept(socket),
        refuse: (socket, error) => socket.write(encodeStringFrame(FrameType.ERROR, 0, JSON.stringify(error.toWire()))),
        name: "TCP request plane",
        logger: this.options.logger,
      });
      this.listener = listener;
      const port = await listener.listen();
      return `${this.advertisedHost()}:${port}`;
    })();
    return this.listening;
  }

  async close(): Promise<void> {
    this.accepting = false;
    // Callers hear why their streams end before the connection closes.
    const reason = new TdistError("shutting_down", "server closed");
    for (const connection of [...this.connections]) connection.destroy(reason, { tellCallers: true, graceful: true });
    const listener = this.listener;
    if (listener === undefined) return;
    this.listener = undefined;
    await listener.close();
  }

  private advertisedHost(): string {
    const { advertiseHost, host } = this.options;
    if (advertiseHost) return advertiseHost;
    if (host === "0.0.0.0" || host === "::") return hostname();
    return host.includes(":") ? `[${host}]` : host;
  }

  private accept(socket: Socket): void {
    const connection = new ServerConnection(socket, this, this.options);
    this.connections.add(connection);
    socket.once("close", () => this.connections.delete(connection));
  }
}

/** One accepted connection and the streams multiplexed on it. */
class ServerConnection {
  private readonly writer = new FrameWriter();
  private readonly runs = new Map<number, HandlerRun>();
  private readonly parser: FrameParser;
  private closed = false;

  constructor(
    private readonly socket: Socket,
    private readonly server: TcpRequestServer,
    private readonly options: TcpServerOptions,
  ) {
    this.parser = new FrameParser(options.maxFrameBytes, (frame) => this.onFrame(frame));
    this.writer.attach(socket);
    socket.on("data", (chunk: Buffer) => {
      try {
        this.parser.push(chunk);
      } catch (err) {
        const error = TdistError.wrap(err, "protocol_error");
        this.options.logger.warn(
          { err: error, remote: socket.remoteAddress },
          "closing request-plane connection: bad frame",
        );
        this.writer.writeString(FrameType.ERROR, 0, JSON.stringify(error.toWire()));
        this.destroy(error, { graceful: true });
      }
    });
    socket.on("error", () => {});
    socket.once("close", () => this.destroy(new TdistError("disconnected", "caller disconnected")));
  }

  /**
   * Ends every stream on this connection: `tellCallers` sends each the reason
   * as its ERROR; `graceful` lets queued bytes leave before the socket closes.
   */
  destroy(reason: TdistError, options: { tellCallers?: boolean; graceful?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    for (const run of this.runs.values()) {
      if (options.tellCallers) run.kill(reason);
      else run.cancel(reason);
    }
    this.runs.clear();
    if (options.graceful) {
      this.writer.flush();
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.writer.close();
      this.socket.destroy();
    }
  }

  private onFrame(frame: Frame): void {
    if (this.closed) return;
    switch (frame.type) {
      case FrameType.REQUEST:
        this.onRequest(frame);
        return;
      case FrameType.CREDIT:
        if (frame.payload.length !== 4) throw new TdistError("protocol_error", "CREDIT frame must carry a u32");
        this.runs.get(frame.streamId)?.addCredit(frame.payload.readUInt32BE(0));
        return;
      case FrameType.STOP:
        this.runs.get(frame.streamId)?.stop();
        return;
      case FrameType.PING:
        if (frame.streamId !== 0) throw new TdistError("protocol_error", "PING on a stream other than 0");
        // Answered from the socket handler, not by a handler: only a live event loop can send it.
        this.writer.writeFrame(FrameType.PONG, 0);
        this.writer.flush();
        return;
      case FrameType.KILL:
        this.runs.get(frame.streamId)?.cancel(new TdistError("cancelled", "caller killed the request"));
        this.runs.delete(frame.streamId);
        return;
      default:
        throw new TdistError("protocol_error", `unexpected frame type ${frame.type} from a caller`);
    }
  }

  private onRequest(frame: Frame): void {
    const { streamId } = frame;
    // Stream 0 carries the connection's own errors; a reused id would make the caller's streams ambiguous.
    if (streamId === 0) throw new TdistError("protocol_error", "REQUEST on stream 0");
    if (this.runs.has(streamId)) throw new TdistError("protocol_error", `stream ${streamId} is already open`);
    const fail = (error: TdistError): void =>
      this.writer.writeString(FrameType.ERROR, streamId, JSON.stringify(error.toWire()));
    let head: RequestHead;
    try {
      head = decodeRequestPayload(frame.payload);
    } catch (err) {
      // The framing is intact, so only this stream is bad: the connection and its other streams go on.
      fail(TdistError.wrap(err, "protocol_error"));
      return;
    }
    if (!this.server.isAccepting) {
      fail(new TdistError("shutting_down", "instance is shutting down"));
      return;
    }
    const admitted = admitRequest(head, (path) => this.server.lookup(path), this.options.codec);
    if (admitted instanceof TdistError) {
      fail(admitted);
      return;
    }
    const { entry, request, ctx } = admitted;
    const run = new HandlerRun(ctx, head.headers.credit, this.sinkFor(streamId));
    this.runs.set(streamId, run);
    entry.inFlight.add(run);
    void run.run(entry.handler, request).finally(() => {
      entry.inFlight.delete(run);
      if (this.runs.get(streamId) === run) this.runs.delete(streamId);
    });
  }

  private sinkFor(streamId: number): ResponseSink {
    const { writer } = this;
    const { codec, maxFrameBytes } = this.options;
    return {
      send(value) {
        const body = codec.encode(value);
        // Checked here so an oversize response fails its own stream; sent, it would make the caller drop the connection.
        if (typeof body === "string") {
          if (FRAME_HEADER_BYTES + body.length * 3 > maxFrameBytes) {
            assertFits(FRAME_HEADER_BYTES + Buffer.byteLength(body), maxFrameBytes);
          }
          writer.writeString(FrameType.DATA, streamId, body);
        } else {
          assertFits(FRAME_HEADER_BYTES + body.length, maxFrameBytes);
          writer.writeFrame(FrameType.DATA, streamId, body);
        }
      },
      end() {
        writer.writeFrame(FrameType.END, streamId);
      },
      fail(error: WireError) {
        writer.writeString(FrameType.ERROR, streamId, JSON.stringify(error));
      },
      backpressure() {
        return writer.needsDrain ? writer.drained() : undefined;
      },
    };
  }
}

function assertFits(frameBytes: number, maxFrameBytes: number): void {
  if (frameBytes > maxFrameBytes) {
    throw new TdistError(
      "frame_too_large",
      `response of ${frameBytes} bytes exceeds the maximum frame of ${maxFrameBytes} bytes (TDIST_MAX_FRAME_BYTES)`,
    );
  }
}
