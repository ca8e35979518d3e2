import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { TdistError, type WireError } from "../errors/tdist-error.js";
import { connectNats, drainNats } from "../event-plane/nats-connection.js";
import { type NatsAuthOptions, type NatsTlsOptions, natsServersForLog } from "../event-plane/nats-security.js";
import type { Logger } from "../logger.js";
import type { Codec } from "./codec.js";
import { HandlerRun, type ResponseSink } from "./handler-run.js";
import { type PeerClock, PeerLiveness } from "./nats-peer-liveness.js";
import {
  asBuffer,
  DEFAULT_CALLER_SILENCE_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_STREAM_SILENCE_MS,
  decodeCreditMessage,
  decodeRequestMessage,
  encodeErrorResponse,
  encodeResponse,
  instanceSubject,
  NatsMessageType,
  nextSeq,
  positiveMs,
  responseSubjectOfControl,
} from "./nats-wire.js";
import { admitRequest } from "./request-admission.js";
import type { RequestPlaneServer, ServedHandler, TransportAddress } from "./request-plane.js";

export interface NatsRequestServerOptions {
  /** NATS server URL(s). */
  url: string | string[];
  /** Credentials and TLS for the NATS connection. */
  auth?: NatsAuthOptions;
  tls?: NatsTlsOptions;
  /** This runtime's instance id: the server listens on `tdist.rp.<instanceId>`. */
  instanceId: string;
  maxFrameBytes: number;
  /** How long the first connection to NATS is retried while NATS does not answer. */
  connectTimeoutMs: number;
  codec: Codec;
  logger: Logger;
  /** How often an open stream with nothing else to send gets a HEARTBEAT. Default 250 ms. */
  heartbeatIntervalMs?: number;
  /** Kill a caller's streams after this long without any message (credit, control, PING) from it. Default 3 000 ms. */
  callerSilenceMs?: number;
  /** Kill one stream after this long without a message on it, even while its caller is heard. Default 10 000 ms. */
  streamSilenceMs?: number;
}

/** The liveness and ordering bookkeeping of one response subject. */
interface StreamState {
  readonly replyTo: string;
  /** Sequence number of the last DATA/END/ERROR sent. */
  seq: number;
  lastSentAt: number;
  lastHeardAt: number;
}

/** One running request. */
interface ServerStream extends StreamState {
  readonly run: HandlerRun;
  /** The caller's inbox: liveness shared by all of its streams. */
  readonly callerKey: string;
  readonly caller: PeerClock;
}

/**
 * The NATS request plane's server: one subscription per runtime on
 * `tdist.rp.<instanceId>` (see nats-wire.ts), each request run by a
 * HandlerRun under the caller's credit. Open streams get heartbeats so the
 * caller notices a dead server, and streams whose caller went silent are
 * killed so a vanished caller leaks nothing.
 */
export class NatsRequestServer implements RequestPlaneServer {
  readonly kind = "nats" as const;
  readonly subject: string;
  private readonly handlers = new Map<string, ServedHandler>();
  private readonly streams = new Map<string, ServerStream>();
  private readonly heartbeatIntervalMs: number;
  private readonly callerSilenceMs: number;
  private readonly streamSilenceMs: number;
  private readonly callers = new PeerLiveness();
  private connectionValue: NatsConnection | undefined;
  /** Aborts a connection attempt still waiting for NATS when the server closes. */
  private readonly closing = new AbortController();
  private monitorDone: Promise<void> | undefined;
  private listening: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastTickAt = 0;
  private accepting = true;
  private closed = false;

  constructor(private readonly options: NatsRequestServerOptions) {
    this.subject = instanceSubject(options.instanceId);
    this.heartbeatIntervalMs = positiveMs(
      "heartbeatIntervalMs",
      options.heartbeatIntervalMs,
      DEFAULT_HEARTBEAT_INTERVAL_MS,
    );
    this.callerSilenceMs = positiveMs("callerSilenceMs", options.callerSilenceMs, DEFAULT_CALLER_SILENCE_MS);
    this.streamSilenceMs = positiveMs("streamSilenceMs", options.streamSilenceMs, DEFAULT_STREAM_SILENCE_MS);
  }

  /** The NATS connection, once listening (tests use it to simulate a crash). */
  get connection(): NatsConnection | undefined {
    return this.connectionValue;
  }

  async register(entry: ServedHandler): Promise<TransportAddress> {
    this.handlers.set(entry.path, entry);
    await this.listen();
    return { nats: this.subject };
  }

  unregister(path: string): void {
    this.handlers.delete(path);
  }

  stopAccepting(): void {
    this.accepting = false;
  }

  /** Connects and subscribes once; resolves when the server has the subscription. */
  listen(): Promise<void> {
    if (this.closed) return Promise.reject(new TdistError("shutting_down", "request plane server closed"));
    this.listening ??= this.connectAndSubscribe().catch((err: unknown) => {
      this.listening = undefined;
      throw err;
    });
    return this.listening;
  }

  /** Fails the remaining streams with `shutting_down`, then drains and closes the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.accepting = false;
    this.closing.abort(new TdistError("shutting_down", "request plane server closed"));
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const reason = new TdistError("shutting_down", "server closed");
    for (const stream of [...this.streams.values()]) this.endStream(stream, reason, true);
    await this.listening?.catch(() => {});
    const connection = this.connectionValue;
    if (connection === undefined) return;
    await drainNats(connection);
    await this.monitorDone;
  }

  private async connectAndSubscribe(): Promise<void> {
    const { url, connectTimeoutMs, logger, instanceId } = this.options;
    let monitored: Awaited<ReturnType<typeof connectNats>>;
    try {
      monitored = await connectNats({
        url,
        ...(this.options.auth ? { auth: this.options.auth } : {}),
        ...(this.options.tls ? { tls: this.options.tls } : {}),
        connectTimeoutMs,
        logger,
        name: `tdist-rp-server-${instanceId}`,
        signal: this.closing.signal,
      });
    } catch (err) {
      if (this.closed) throw new TdistError("shutting_down", "request plane server closed while connecting");
      // Bad options, refused credentials or certificates, the wait running out and cancellation keep their codes.
      if (TdistError.is(err) && err.code !== "event_plane_error") throw err;
      throw new TdistError("cannot_connect", `NATS request plane cannot connect to ${natsServersForLog(url)}`, {
        cause: err,
      });
    }
    const { connection, monitorDone } = monitored;
    this.connectionValue = connection;
    this.monitorDone = monitorDone;
    if (this.closed) {
      await drainNats(connection);
      throw new TdistError("shutting_down", "request plane server closed while connecting");
    }
    void connection.closed().then(() => this.onConnectionClosed());
    connection.subscribe(this.subject, { callback: (err, msg) => this.onMessage(err, msg) });
    // Advertise only once nats-server holds the subscription, or early callers would see "no responders".
    await connection.flush();
    if (this.closed) return;
    this.lastTickAt = performance.now();
    this.timer = setInterval(() => this.tick(), this.heartbeatIntervalMs);
    this.timer.unref();
  }

  /** The connection closed under us (not by `close()`): the streams can reach nobody, so end them. */
  private onConnectionClosed(): void {
    if (this.closed) return;
    this.accepting = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.streams.size > 0) {
      this.options.logger.warn(
        { subject: this.subject, streams: this.streams.size },
        "NATS connection closed; killing streams",
      );
    }
    const reason = new TdistError("disconnected", "NATS connection closed");
    for (const stream of [...this.streams.values()]) this.endStream(stream, reason, false);
  }

  private onMessage(err: Error | null, msg: Msg): void {
    if (err) {
      this.options.logger.warn({ err, subject: this.subject }, "NATS request plane subscription failed");
      return;
    }
    const data = asBuffer(msg.data);
    const type = data[0];
    if (type === NatsMessageType.REQUEST) {
      this.onRequest(msg, data);
      return;
    }
    const stream = this.streamFor(msg.reply);
    if (stream === undefined) return;
    const now = performance.now();
    stream.lastHeardAt = now;
    stream.caller.lastHeardAt = now;
    switch (type) {
      case NatsMessageType.CREDIT: {
        let credit: number;
        try {
          credit = decodeCreditMessage(data);
        } catch (error) {
          this.options.logger.warn({ err: error, replyTo: stream.replyTo }, "ignoring malformed CREDIT message");
          return;
        }
        stream.run.addCredit(credit);
        return;
      }
      case NatsMessageType.STOP:
        stream.run.stop();
        return;
      case NatsMessageType.KILL:
        this.endStream(stream, new TdistError("cancelled", "caller killed the request"), false);
        return;
      case NatsMessageType.PING:
        return;
      default:
        this.options.logger.warn({ type, replyTo: stream.replyTo }, "ignoring unexpected request plane message");
    }
  }

  private streamFor(controlSubject: string | undefined): ServerStream | undefined {
    const replyTo = responseSubjectOfControl(controlSubject);
    return replyTo === undefined ? undefined : this.streams.get(replyTo);
  }

  private onRequest(msg: Msg, data: Buffer): void {
    const replyTo = msg.reply;
    if (!replyTo) {
      this.options.logger.warn({ subject: this.subject }, "dropping a request without a reply subject");
      return;
    }
    if (this.streams.has(replyTo)) {
      this.options.logger.warn({ replyTo }, "dropping a request for a stream that is already open");
      return;
    }
    const fail = (error: TdistError): void => {
      try {
        this.connectionValue?.publish(replyTo, encodeErrorResponse(1, error.toWire()));
      } catch {
        // The connection is closing: the caller notices through "no responders" or the missing heartbeat.
      }
    };
    if (data.length > this.options.maxFrameBytes) {
      fail(
        new TdistError(
          "frame_too_large",
          `request of ${data.length} bytes exceeds the maximum of ${this.options.maxFrameBytes} bytes`,
        ),
      );
      return;
    }
    if (!this.accepting) {
      fail(new TdistError("shutting_down", "instance is shutting down"));
      return;
    }
    let head: ReturnType<typeof decodeRequestMessage>;
    try {
      head = decodeRequestMessage(data);
    } catch (err) {
      fail(TdistError.wrap(err, "protocol_error"));
      return;
    }
    const admitted = admitRequest(head, (path) => this.handlers.get(path), this.options.codec);
    if (admitted instanceof TdistError) {
      fail(admitted);
      return;
    }
    const { entry, request, ctx } = admitted;
    const now = performance.now();
    const state: StreamState = { replyTo, seq: 0, lastSentAt: now, lastHeardAt: now };
    const run = new HandlerRun(ctx, head.headers.credit, this.sinkFor(state));
    // The caller's inbox is the reply subject without its last token (the stream id).
    const callerKey = replyTo.slice(0, Math.max(0, replyTo.lastIndexOf(".")));
    const caller = this.callers.attach(callerKey, now);
    caller.lastHeardAt = now;
    const stream: ServerStream = Object.assign(state, { run, callerKey, caller });
    this.streams.set(replyTo, stream);
    // What the runtime kills when a drain's grace expires: the caller hears why instead of waiting for silence.
    const handle = {
      kill: (reason?: unknown) =>
        this.endStream(
          stream,
          reason instanceof TdistError ? reason : new TdistError("cancelled", "request killed", { cause: reason }),
          true,
        ),
      get done() {
        return run.done;
      },
    };
    entry.inFlight.add(handle);
    void run.run(entry.handler, request).finally(() => {
      entry.inFlight.delete(handle);
      this.forget(stream);
    });
  }

  /** Ends a stream's handler; `tellCaller` sends the reason as the stream's ERROR unless it already ended. */
  private endStream(stream: ServerStream, reason: TdistError, tellCaller: boolean): void {
    this.forget(stream);
    if (tellCaller) stream.run.kill(reason);
    else stream.run.cancel(reason);
  }

  private forget(stream: ServerStream): void {
    if (this.streams.get(stream.replyTo) !== stream) return;
    this.streams.delete(stream.replyTo);
    this.callers.detach(stream.callerKey);
  }

  private sinkFor(stream: StreamState): ResponseSink {
    const codec = this.options.codec;
    return {
      send: (value) => {
        const seq = nextSeq(stream.seq);
        const payload = encodeResponse(NatsMessageType.DATA, seq, codec.encode(value));
        const limit = this.payloadLimit();
        if (payload.length > limit) {
          // Thrown inside the handler run: it becomes this stream's ERROR, keeping the code.
          throw new TdistError(
            "frame_too_large",
            `response of ${payload.length} bytes exceeds the maximum message of ${limit} bytes`,
          );
        }
        this.publish(stream, payload, seq);
      },
      end: () => {
        const seq = nextSeq(stream.seq);
        this.publish(stream, encodeResponse(NatsMessageType.END, seq), seq);
      },
      fail: (error: WireError) => {
        const seq = nextSeq(stream.seq);
        this.publish(stream, encodeErrorResponse(seq, error), seq);
      },
      // Credit bounds what each stream has in flight; the NATS client buffers the rest.
      backpressure: () => undefined,
    };
  }

  /** Never throws: a publish on a closing connection is dropped and the caller's liveness checks fail the stream. */
  private publish(stream: StreamState, payload: Uint8Array, seq: number): void {
    const connection = this.connectionValue;
    if (connection === undefined || connection.isClosed()) return;
    try {
      connection.publish(stream.replyTo, payload);
      stream.seq = seq;
      stream.lastSentAt = performance.now();
    } catch (err) {
      this.options.logger.debug({ err, replyTo: stream.replyTo }, "cannot publish a response");
    }
  }

  private payloadLimit(): number {
    return Math.min(this.options.maxFrameBytes, this.connectionValue?.info?.max_payload ?? Number.POSITIVE_INFINITY);
  }

  /** Heartbeats idle streams and kills streams whose caller (or the stream itself) went silent. */
  private tick(): void {
    const now = performance.now();
    // A late tick means this process stalled: do not blame callers for our own silence.
    const stall = now - this.lastTickAt - this.heartbeatIntervalMs;
    this.lastTickAt = now;
    if (stall > this.heartbeatIntervalMs) this.callers.excuse(stall);
    for (const stream of [...this.streams.values()]) {
      if (stall > this.heartbeatIntervalMs) stream.lastHeardAt += stall;
      const silence =
        now - stream.caller.lastHeardAt > this.callerSilenceMs
          ? "caller stopped sending heartbeats"
          : now - stream.lastHeardAt > this.streamSilenceMs
            ? "caller stopped sending heartbeats on this stream"
            : undefined;
      if (silence !== undefined) {
        this.options.logger.debug({ replyTo: stream.replyTo }, `${silence}; killing its request`);
        this.endStream(stream, new TdistError("disconnected", silence), false);
      } else if (now - stream.lastSentAt >= this.heartbeatIntervalMs) {
        this.publish(stream, encodeResponse(NatsMessageType.HEARTBEAT, stream.seq), stream.seq);
      }
    }
  }
}
