import { createInbox, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { TdistError } from "../errors/tdist-error.js";
import { connectNats, drainNats } from "../event-plane/nats-connection.js";
import { type NatsAuthOptions, type NatsTlsOptions, natsServersForLog } from "../event-plane/nats-security.js";
import type { ResponseStream } from "../handler.js";
import type { Logger } from "../logger.js";
import type { Codec } from "./codec.js";
import { type PeerClock, PeerLiveness } from "./nats-peer-liveness.js";
import {
  asBuffer,
  controlMessage,
  controlSubjectOf,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_SERVER_SILENCE_MS,
  DEFAULT_STREAM_SILENCE_MS,
  decodeErrorBody,
  decodeResponse,
  encodeCreditMessage,
  encodeRequestMessage,
  NatsMessageType,
  nextSeq,
  positiveMs,
  type ResponseMessage,
} from "./nats-wire.js";
import type { OpenStreamOptions, RequestPlaneClient, TransportAddress } from "./request-plane.js";
import { type StreamTransport, TcpResponseStream } from "./tcp-response-stream.js";

export interface NatsRequestClientOptions {
  /** NATS server URL(s). */
  url: string | string[];
  /** Credentials and TLS for the NATS connection. */
  auth?: NatsAuthOptions;
  tls?: NatsTlsOptions;
  maxFrameBytes: number;
  /** How long the first connection to NATS is retried while NATS does not answer. */
  connectTimeoutMs: number;
  /** Cancels `connect()` while it waits for NATS. */
  signal?: AbortSignal;
  streamWindow: number;
  codec: Codec;
  logger: Logger;
  /** How often an open stream the caller sent nothing else on gets a PING. Default 250 ms. */
  heartbeatIntervalMs?: number;
  /** Fail a server's streams with `disconnected` after this long without any message from it. Default 1 000 ms. */
  serverSilenceMs?: number;
  /** Fail one stream after this long without a message on it, even while its server is heard. Default 10 000 ms. */
  streamSilenceMs?: number;
}

/** One open stream as the client tracks it; the iterator half is a credit-window response stream. */
interface OpenStream {
  readonly stream: TcpResponseStream<unknown>;
  readonly address: { nats: string };
  readonly controlSubject: string;
  /** Liveness of the server process, shared by its streams. */
  readonly server: PeerClock;
  /** Sequence number of the last DATA/END/ERROR received. */
  received: number;
  lastHeardAt: number;
  lastSentAt: number;
}

const MAX_STREAM_ID = 0xffffffff;

/**
 * The NATS request plane's caller side: one connection and one wildcard
 * inbox subscription per runtime; each stream's responses arrive on
 * `<inbox>.<streamId>` (see nats-wire.ts). A stream fails with
 * `cannot_connect` when its REQUEST finds no subscriber ("no responders"),
 * and with `disconnected` when a later message finds none, when a response
 * is missing from the sequence, or when the server is silent for
 * `serverSilenceMs` (it heartbeats every open stream).
 */
export class NatsRequestClient implements RequestPlaneClient, StreamTransport {
  readonly kind = "nats" as const;
  private readonly streams = new Map<number, OpenStream>();
  private readonly disconnectListeners = new Set<(address: TransportAddress) => void>();
  private readonly inboxPrefix: string;
  private readonly heartbeatIntervalMs: number;
  private readonly serverSilenceMs: number;
  private readonly streamSilenceMs: number;
  private readonly servers = new PeerLiveness();
  private readonly timer: NodeJS.Timeout;
  private lastTickAt = performance.now();
  private nextStreamId = 1;
  private closed = false;

  private constructor(
    readonly connection: NatsConnection,
    private readonly monitorDone: Promise<void>,
    private readonly options: NatsRequestClientOptions,
  ) {
    this.heartbeatIntervalMs = positiveMs(
      "heartbeatIntervalMs",
      options.heartbeatIntervalMs,
      DEFAULT_HEARTBEAT_INTERVAL_MS,
    );
    this.serverSilenceMs = positiveMs("serverSilenceMs", options.serverSilenceMs, DEFAULT_SERVER_SILENCE_MS);
    this.streamSilenceMs = positiveMs("streamSilenceMs", options.streamSilenceMs, DEFAULT_STREAM_SILENCE_MS);
    const inbox = createInbox();
    this.inboxPrefix = `${inbox}.`;
    connection.subscribe(`${inbox}.>`, { callback: (err, msg) => this.onMessage(err, msg) });
    this.timer = setInterval(() => this.tick(), this.heartbeatIntervalMs);
    this.timer.unref();
    void connection.closed().then(() => this.onConnectionClosed());
  }

  /**
   * Connects to NATS, waiting up to `connectTimeoutMs` for it to answer; fails
   * with `dependency_unavailable` when it does not, `cannot_connect` when it
   * refuses the connection.
   */
  static async connect(options: NatsRequestClientOptions): Promise<NatsRequestClient> {
    positiveMs("heartbeatIntervalMs", options.heartbeatIntervalMs, DEFAULT_HEARTBEAT_INTERVAL_MS);
    positiveMs("serverSilenceMs", options.serverSilenceMs, DEFAULT_SERVER_SILENCE_MS);
    positiveMs("streamSilenceMs", options.streamSilenceMs, DEFAULT_STREAM_SILENCE_MS);
    let monitored: Awaited<ReturnType<typeof connectNats>>;
    try {
      monitored = await connectNats({
        url: options.url,
        ...(options.auth ? { auth: options.auth } : {}),
        ...(options.tls ? { tls: options.tls } : {}),
        connectTimeoutMs: options.connectTimeoutMs,
        logger: options.logger,
        name: "tdist-rp-client",
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (err) {
      // Bad options, refused credentials or certificates, the wait running out and cancellation keep their codes.
      if (TdistError.is(err) && err.code !== "event_plane_error") throw err;
      throw new TdistError("cannot_connect", `NATS request plane cannot connect to ${natsServersForLog(options.url)}`, {
        cause: err,
      });
    }
    const client = new NatsRequestClient(monitored.connection, monitored.monitorDone, options);
    try {
      // The inbox subscription must be live before the first request's reply can arrive.
      await monitored.connection.flush();
    } catch (err) {
      await client.close();
      throw new TdistError("cannot_connect", "NATS request plane lost its connection while starting", { cause: err });
    }
    return client;
  }

  open<T>(address: TransportAddress, request: unknown, options: OpenStreamOptions): ResponseStream<T> {
    if (!("nats" in address)) throw new TdistError("bad_request", "NATS request plane cannot reach a TCP address");
    const streamId = this.allocateStreamId();
    const window = this.options.streamWindow;
    const { context } = options;
    const stream = new TcpResponseStream<T>(streamId, options.instanceId, context, window, this, options);
    // Born killed, the stream has settled already (its constructor did): send nothing.
    if (!stream.isOpen) return stream;
    if (this.closed) {
      stream.pushError(new TdistError("shutting_down", "request plane client closed"));
      return stream;
    }
    let payload: Buffer;
    try {
      const body = this.options.codec.encode(request);
      const headers = {
        requestId: context.requestId,
        credit: window,
        ...(options.deadline === undefined ? {} : { deadline: options.deadline }),
        ...(Object.keys(context.annotations).length === 0 ? {} : { annotations: { ...context.annotations } }),
      };
      payload = encodeRequestMessage(options.path, headers, typeof body === "string" ? Buffer.from(body) : body);
    } catch (err) {
      stream.pushError(TdistError.wrap(err, "codec_error"));
      return stream;
    }
    const limit = this.payloadLimit();
    if (payload.length > limit) {
      stream.pushError(
        new TdistError("frame_too_large", `request of ${payload.length} bytes exceeds the maximum of ${limit} bytes`),
      );
      return stream;
    }
    const responseSubject = `${this.inboxPrefix}${streamId}`;
    const now = performance.now();
    this.streams.set(streamId, {
      stream: stream as TcpResponseStream<unknown>,
      address: { nats: address.nats },
      controlSubject: controlSubjectOf(responseSubject),
      server: this.servers.attach(address.nats, now),
      received: 0,
      lastHeardAt: now,
      lastSentAt: now,
    });
    try {
      this.connection.publish(address.nats, payload, { reply: responseSubject });
    } catch (err) {
      stream.pushError(TdistError.wrap(err, "cannot_connect", `cannot send the request to ${address.nats}`));
    }
    return stream;
  }

  sendCredit(streamId: number, credit: number): void {
    this.sendControl(streamId, encodeCreditMessage(credit));
  }

  sendStop(streamId: number): void {
    this.sendControl(streamId, controlMessage(NatsMessageType.STOP));
  }

  sendKill(streamId: number): void {
    this.sendControl(streamId, controlMessage(NatsMessageType.KILL));
  }

  release(streamId: number): void {
    const open = this.streams.get(streamId);
    if (open === undefined) return;
    this.streams.delete(streamId);
    this.servers.detach(open.address.nats);
  }

  onDisconnect(listener: (address: TransportAddress) => void): () => void {
    this.disconnectListeners.add(listener);
    return () => this.disconnectListeners.delete(listener);
  }

  /** Kills every open stream (remote handlers included), then drains and closes the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.failAll(new TdistError("shutting_down", "request plane client closed"), true);
    await drainNats(this.connection);
    await this.monitorDone;
  }

  private sendControl(streamId: number, message: Uint8Array): void {
    const open = this.streams.get(streamId);
    if (open === undefined) return;
    try {
      this.connection.publish(open.address.nats, message, { reply: open.controlSubject });
      open.lastSentAt = performance.now();
    } catch (err) {
      this.options.logger.debug({ err, streamId }, "cannot send a request plane control message");
    }
  }

  private onMessage(err: Error | null, msg: Msg): void {
    if (err) {
      this.options.logger.warn({ err }, "NATS request plane inbox failed");
      this.failAll(TdistError.wrap(err, "disconnected", "NATS inbox subscription failed"), false);
      return;
    }
    let suffix = msg.subject.slice(this.inboxPrefix.length);
    const isControl = suffix.endsWith(".c");
    if (isControl) suffix = suffix.slice(0, -2);
    const streamId = Number(suffix);
    const open = this.streams.get(streamId);
    if (open === undefined) return;
    const now = performance.now();
    open.lastHeardAt = now;
    open.server.lastHeardAt = now;
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      // "No responders": nothing subscribes to the instance's subject any more (or never did).
      const error = isControl
        ? new TdistError("disconnected", `instance at ${open.address.nats} went away mid-stream`)
        : new TdistError("cannot_connect", `no server listens on ${open.address.nats}`);
      open.stream.pushError(error);
      this.notifyDisconnect(open.address);
      return;
    }
    // Only "no responders" statuses come back on control subjects.
    if (isControl) return;
    let response: ResponseMessage;
    try {
      response = decodeResponse(asBuffer(msg.data));
    } catch (error) {
      this.abort(open, TdistError.wrap(error, "protocol_error", `bad response from ${open.address.nats}`));
      return;
    }
    if (response.type === NatsMessageType.HEARTBEAT) {
      if (response.seq !== open.received) this.lostResponses(open, response.seq);
      return;
    }
    if (response.seq !== nextSeq(open.received)) {
      this.lostResponses(open, response.seq);
      return;
    }
    open.received = response.seq;
    switch (response.type) {
      case NatsMessageType.DATA: {
        let value: unknown;
        try {
          value = this.options.codec.decode(response.body);
        } catch (error) {
          this.abort(open, TdistError.wrap(error, "codec_error", "response body"));
          return;
        }
        open.stream.pushData(value);
        return;
      }
      case NatsMessageType.END:
        open.stream.pushEnd();
        return;
      case NatsMessageType.ERROR:
        open.stream.pushError(decodeErrorBody(response.body));
        return;
    }
  }

  private lostResponses(open: OpenStream, seq: number): void {
    this.abort(
      open,
      new TdistError(
        "disconnected",
        `responses from ${open.address.nats} were lost (received up to #${open.received}, server is at #${seq})`,
      ),
    );
  }

  /** Kills the remote handler, then fails the stream. */
  private abort(open: OpenStream, error: TdistError): void {
    this.sendKill(open.stream.streamId);
    open.stream.pushError(error);
  }

  /** PINGs streams the caller has been quiet on; fails streams whose server (or the stream itself) went silent. */
  private tick(): void {
    const now = performance.now();
    // A late tick means this process stalled, and replies may be waiting unread: do not blame servers for it.
    const stall = now - this.lastTickAt - this.heartbeatIntervalMs;
    this.lastTickAt = now;
    if (stall > this.heartbeatIntervalMs) this.servers.excuse(stall);
    const ping = controlMessage(NatsMessageType.PING);
    for (const open of [...this.streams.values()]) {
      if (stall > this.heartbeatIntervalMs) open.lastHeardAt += stall;
      if (now - open.server.lastHeardAt > this.serverSilenceMs) {
        this.abort(
          open,
          new TdistError("disconnected", `no heartbeat from ${open.address.nats} for ${this.serverSilenceMs} ms`),
        );
        this.notifyDisconnect(open.address);
      } else if (now - open.lastHeardAt > this.streamSilenceMs) {
        this.abort(
          open,
          new TdistError("disconnected", `stream to ${open.address.nats} silent for ${this.streamSilenceMs} ms`),
        );
      } else if (now - open.lastSentAt >= this.heartbeatIntervalMs) {
        this.sendControl(open.stream.streamId, ping);
      }
    }
  }

  private onConnectionClosed(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.failAll(new TdistError("disconnected", "NATS connection closed"), false);
  }

  private failAll(error: TdistError, killRemote: boolean): void {
    for (const open of [...this.streams.values()]) {
      if (killRemote) this.sendKill(open.stream.streamId);
      open.stream.pushError(error);
    }
    this.streams.clear();
    this.servers.clear();
  }

  private notifyDisconnect(address: { nats: string }): void {
    this.options.logger.debug({ address }, "request plane instance unreachable");
    for (const listener of this.disconnectListeners) listener(address);
  }

  private payloadLimit(): number {
    return Math.min(this.options.maxFrameBytes, this.connection.info?.max_payload ?? Number.POSITIVE_INFINITY);
  }

  private allocateStreamId(): number {
    const id = this.nextStreamId;
    this.nextStreamId = id >= MAX_STREAM_ID ? 1 : id + 1;
    return id;
  }
}
