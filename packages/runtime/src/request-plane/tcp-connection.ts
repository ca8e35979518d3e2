import type { Socket } from "node:net";
import type { Context } from "../context.js";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import type { Codec } from "./codec.js";
import {
  encodeFrame,
  encodeRequestPayload,
  FRAME_HEADER_BYTES,
  type Frame,
  FrameParser,
  FrameType,
  type OversizeFrame,
} from "./frame.js";
import { FrameWriter } from "./frame-writer.js";
import type { StreamHooks } from "./request-plane.js";
import { dialTcp } from "./tcp-dial.js";
import { type StreamTransport, TcpResponseStream } from "./tcp-response-stream.js";
import { type TcpTls, tlsFailureReason } from "./tcp-tls.js";

export interface TcpConnectionOptions {
  address: string;
  maxFrameBytes: number;
  connectTimeoutMs: number;
  /** PING interval while streams are open; `HEARTBEAT_MISSES` intervals without a frame drop the connection. 0 disables. */
  heartbeatMs?: number | undefined;
  streamWindow: number;
  codec: Codec;
  logger: Logger;
  /** Mutual TLS to the peer; a peer without TLS, or one that refuses this certificate, is `cannot_connect`. */
  tls?: TcpTls | undefined;
}

const MAX_STREAM_ID = 0xffffffff;
/**
 * Heartbeat intervals of silence, with streams open, after which the server
 * is taken for hung (alive to the kernel, which still ACKs, but not running):
 * enough that a loaded server's event-loop stalls of tens of ms never trip it.
 */
const HEARTBEAT_MISSES = 5;

/**
 * The caller's connection to one peer process, multiplexing every stream to
 * it. Frames written while connecting wait in the writer. When the connection
 * drops, every open stream fails with `disconnected` (or `cannot_connect` if
 * it never opened) at once. While streams are open it sends a PING every
 * `heartbeatMs`; a server that sends no frame at all for `HEARTBEAT_MISSES`
 * intervals is hung, and the connection is dropped as if it had closed.
 */
export class TcpConnection implements StreamTransport {
  private readonly writer = new FrameWriter();
  private readonly streams = new Map<number, TcpResponseStream<unknown>>();
  private readonly socket: Socket;
  private nextStreamId = 1;
  private connected = false;
  private closedWith: TdistError | undefined;
  private readonly closeListeners: Array<(error: TdistError) => void> = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private lastHeardAt = 0;
  private lastBeatAt = 0;

  constructor(private readonly options: TcpConnectionOptions) {
    const { host, port } = parseAddress(options.address);
    const parser = new FrameParser(
      options.maxFrameBytes,
      (frame) => this.onFrame(frame),
      (frame) => this.onOversize(frame),
    );
    const { socket, readyEvent } = dialTcp(host, port, options.tls);
    this.socket = socket;
    let heardFromPeer = false;
    const timer = setTimeout(() => {
      this.fail(new TdistError("cannot_connect", `connect to ${options.address} timed out`));
    }, options.connectTimeoutMs);
    this.socket.once(readyEvent, () => {
      clearTimeout(timer);
      this.connected = true;
      this.writer.attach(this.socket);
    });
    this.socket.on("data", (chunk: Buffer) => {
      heardFromPeer = true;
      this.lastHeardAt = performance.now();
      try {
        parser.push(chunk);
      } catch (err) {
        this.fail(TdistError.wrap(err, "protocol_error", `bad frame from ${options.address}`));
      }
    });
    this.socket.on("error", (err) => {
      clearTimeout(timer);
      // TLS 1.3 finishes the client's handshake before the server checks its certificate: a refusal can follow `ready`.
      const tlsReason = heardFromPeer ? undefined : tlsFailureReason(err);
      if (tlsReason !== undefined) {
        this.fail(
          new TdistError(
            "cannot_connect",
            `TLS with ${options.address} failed: ${tlsReason} (both sides need TDIST_TCP_TLS_* from one CA, ` +
              `and the server's certificate must name ${host})`,
            { cause: err },
          ),
        );
        return;
      }
      this.fail(
        this.connected
          ? TdistError.wrap(err, "disconnected", `connection to ${options.address} lost`)
          : TdistError.wrap(err, "cannot_connect", `cannot connect to ${options.address}`),
      );
    });
    this.socket.once("close", () => {
      clearTimeout(timer);
      this.fail(
        this.connected
          ? new TdistError("disconnected", `connection to ${options.address} closed`)
          : new TdistError("cannot_connect", `cannot connect to ${options.address}`),
      );
    });
  }

  get isClosed(): boolean {
    return this.closedWith !== undefined;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  onClose(listener: (error: TdistError) => void): void {
    this.closeListeners.push(listener);
  }

  open<T>(
    path: string,
    request: unknown,
    instanceId: string,
    context: Context,
    deadline: number | undefined,
    hooks: StreamHooks,
  ): TcpResponseStream<T> {
    const streamId = this.allocateStreamId();
    const window = this.options.streamWindow;
    const stream = new TcpResponseStream<T>(streamId, instanceId, context, window, this, hooks);
    if (!stream.isOpen) return stream;
    if (this.closedWith) {
      stream.pushError(this.closedWith);
      return stream;
    }
    let payload: Buffer;
    try {
      const body = this.options.codec.encode(request);
      const headers = {
        requestId: context.requestId,
        credit: window,
        ...(deadline === undefined ? {} : { deadline }),
        ...(Object.keys(context.annotations).length === 0 ? {} : { annotations: { ...context.annotations } }),
      };
      payload = encodeRequestPayload(path, headers, typeof body === "string" ? Buffer.from(body) : body);
    } catch (err) {
      stream.pushError(TdistError.wrap(err, "codec_error"));
      return stream;
    }
    if (payload.length + FRAME_HEADER_BYTES > this.options.maxFrameBytes) {
      stream.pushError(
        new TdistError(
          "frame_too_large",
          `request of ${payload.length} bytes exceeds the maximum frame of ${this.options.maxFrameBytes} bytes`,
        ),
      );
      return stream;
    }
    this.streams.set(streamId, stream as TcpResponseStream<unknown>);
    this.writer.write(encodeFrame(FrameType.REQUEST, streamId, payload));
    if (this.streams.size === 1) this.startHeartbeat();
    return stream;
  }

  sendCredit(streamId: number, credit: number): void {
    if (!this.streams.has(streamId)) return;
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(credit, 0);
    this.writer.writeFrame(FrameType.CREDIT, streamId, payload);
    // Credit unblocks the server: send it now rather than after this tick's consumer loop finishes.
    this.writer.flush();
  }

  sendStop(streamId: number): void {
    if (this.streams.has(streamId)) this.writer.writeFrame(FrameType.STOP, streamId);
  }

  sendKill(streamId: number): void {
    if (this.streams.has(streamId)) this.writer.writeFrame(FrameType.KILL, streamId);
  }

  release(streamId: number): void {
    this.streams.delete(streamId);
  }

  close(): void {
    this.fail(new TdistError("shutting_down", "connection closed by the caller"));
  }

  private onFrame(frame: Frame): void {
    const stream = this.streams.get(frame.streamId);
    switch (frame.type) {
      case FrameType.DATA: {
        if (stream === undefined) return;
        let value: unknown;
        try {
          value = this.options.codec.decode(frame.payload);
        } catch (err) {
          // KILL first: pushError releases the stream, after which no KILL would be sent.
          this.sendKill(frame.streamId);
          stream.pushError(TdistError.wrap(err, "codec_error", "response body"));
          return;
        }
        stream.pushData(value);
        return;
      }
      case FrameType.END:
        stream?.pushEnd();
        return;
      case FrameType.PONG:
        // Liveness only: being heard at all is what counts, and the data handler noted it.
        return;
      case FrameType.ERROR: {
        let wire: unknown;
        try {
          wire = JSON.parse(frame.payload.toString("utf8"));
        } catch {
          wire = undefined;
        }
        const error = TdistError.fromWire(wire);
        if (frame.streamId === 0) this.fail(error);
        else stream?.pushError(error);
        return;
      }
      default:
        throw new TdistError("protocol_error", `unexpected frame type ${frame.type} from a server`);
    }
  }

  /** A response larger than this side accepts (the server's limit is higher): that stream fails alone. */
  private onOversize(frame: OversizeFrame): void {
    if (frame.streamId === 0 || frame.type !== FrameType.DATA) {
      throw new TdistError(
        "frame_too_large",
        `${frame.bytes}-byte frame exceeds the maximum of ${this.options.maxFrameBytes} bytes`,
      );
    }
    const stream = this.streams.get(frame.streamId);
    if (stream === undefined) return;
    this.sendKill(frame.streamId);
    stream.pushError(
      new TdistError(
        "frame_too_large",
        `response of ${frame.bytes} bytes exceeds the maximum frame of ${this.options.maxFrameBytes} bytes (TDIST_MAX_FRAME_BYTES)`,
      ),
    );
  }

  private startHeartbeat(): void {
    const interval = this.options.heartbeatMs ?? 0;
    if (interval <= 0 || this.heartbeat !== undefined || this.closedWith !== undefined) return;
    const now = performance.now();
    // An idle connection may have been silent for long; the clock starts with its first stream.
    this.lastHeardAt = now;
    this.lastBeatAt = now;
    this.heartbeat = setInterval(() => this.beat(interval), interval);
    this.heartbeat.unref();
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  private beat(interval: number): void {
    // Idle connections send nothing: the next stream restarts the heartbeat.
    if (this.streams.size === 0) {
      this.stopHeartbeat();
      return;
    }
    const now = performance.now();
    // This process itself stalled (GC, a blocked loop): the server's frames may be waiting unread, so it is not blamed.
    const late = now - this.lastBeatAt - interval;
    if (late > interval) this.lastHeardAt = Math.min(now, this.lastHeardAt + late);
    this.lastBeatAt = now;
    // Still connecting: the connect timeout decides.
    if (!this.connected) {
      this.lastHeardAt = now;
      return;
    }
    const silentMs = now - this.lastHeardAt;
    if (silentMs > interval * HEARTBEAT_MISSES) {
      this.fail(
        new TdistError(
          "disconnected",
          `no frame from ${this.options.address} in ${Math.round(silentMs)} ms with ${this.streams.size} streams ` +
            `open: the server is hung (TDIST_TCP_HEARTBEAT_MS=${interval})`,
        ),
      );
      return;
    }
    this.writer.writeFrame(FrameType.PING, 0);
    this.writer.flush();
  }

  private allocateStreamId(): number {
    const id = this.nextStreamId;
    this.nextStreamId = id >= MAX_STREAM_ID ? 1 : id + 1;
    return id;
  }

  private fail(error: TdistError): void {
    if (this.closedWith) return;
    this.closedWith = error;
    this.stopHeartbeat();
    this.writer.close();
    this.socket.destroy();
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const stream of streams) stream.pushError(error);
    for (const listener of this.closeListeners) listener(error);
  }
}

export function parseAddress(address: string): { host: string; port: number } {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!match) throw new TdistError("bad_request", `invalid TCP address ${JSON.stringify(address)}`);
  return { host: match[1] as string, port: Number(match[2]) };
}
