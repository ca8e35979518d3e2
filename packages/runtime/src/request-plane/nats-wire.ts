import { TdistError, type WireError } from "../errors/tdist-error.js";
import { decodeRequestPayload, encodeRequestPayload, type RequestHead, type RequestHeaders } from "./frame.js";

/**
 * NATS request plane message shapes (docs/architecture.md, "NATS request
 * plane"): a request to the instance's subject, responses streamed back in
 * order with end/error markers, stop and kill honoured.
 *
 * Subjects:
 * - `tdist.rp.<instanceIdHex>`: the one subject a serving runtime subscribes
 *   to. Every caller-to-server message goes here, so NATS keeps a caller's
 *   REQUEST and the control messages that follow it in order.
 * - `<callerInbox>.<streamId>`: where the server streams one request's
 *   responses; it is the REQUEST's reply subject and keys the stream.
 * - `<callerInbox>.<streamId>.c`: the reply subject of control messages, so a
 *   "no responders" status caused by a control message (the server went away
 *   mid-stream) is told apart from one caused by the REQUEST itself (the
 *   request never reached a server).
 *
 * Caller to server (first byte is the type):
 * ```
 * REQUEST := 0x01 | u16 BE pathLen | path | u16 BE headersLen | JSON headers | body   (reply: response subject)
 * STOP    := 0x05            KILL := 0x06            PING := 0x08                      (reply: control subject)
 * CREDIT  := 0x07 | u32 BE n                                                          (reply: control subject)
 * ```
 * Server to caller, on the response subject:
 * ```
 * response  := u8 type | u32 BE seq | body
 * DATA      := 0x02, seq = n, body = codec bytes
 * END       := 0x03, seq = n, no body
 * ERROR     := 0x04, seq = n, body = JSON { code, category, message }
 * HEARTBEAT := 0x09, seq = the last n sent (not incremented), no body
 * ```
 * DATA, END and ERROR are numbered 1, 2, 3, ... per stream; a caller that
 * sees a gap (or a heartbeat ahead of what it received) fails the stream with
 * `disconnected` rather than deliver a stream with a hole in it.
 */
export const NatsMessageType = {
  REQUEST: 1,
  DATA: 2,
  END: 3,
  ERROR: 4,
  STOP: 5,
  KILL: 6,
  CREDIT: 7,
  PING: 8,
  HEARTBEAT: 9,
} as const;

export type NatsMessageTypeValue = (typeof NatsMessageType)[keyof typeof NatsMessageType];

/** How often each side sends a heartbeat (HEARTBEAT / PING) on a stream it has sent nothing else on. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 250;
/** A caller fails a server's streams with `disconnected` after this long without any message from it (3 missed heartbeats, plus one). */
export const DEFAULT_SERVER_SILENCE_MS = 1_000;
/** A server kills a caller's streams after this long without any message from it. Longer: killing work is worse than failing late. */
export const DEFAULT_CALLER_SILENCE_MS = 3_000;
/** Either side gives up on one stream silent this long while its peer is still heard (a lost stream, not a lost peer). */
export const DEFAULT_STREAM_SILENCE_MS = 10_000;

/** The next sequence number, wrapping at 2^32 like the u32 on the wire. */
export function nextSeq(seq: number): number {
  return (seq + 1) >>> 0;
}

/** Validates a liveness duration option. */
export function positiveMs(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new TdistError("invalid_option", `option ${option} must be a positive integer (ms), got ${String(value)}`);
  }
  return value;
}

/** Bytes before a response body: type (1) and sequence number (4). */
export const RESPONSE_HEADER_BYTES = 5;

/** Longest error message sent on the wire; a handler's giant message must not exceed the payload limit. */
const MAX_ERROR_MESSAGE_CHARS = 4096;

const SUBJECT_PREFIX = "tdist.rp.";
const CONTROL_SUFFIX = ".c";

/** The subject an instance's request plane server listens on. */
export function instanceSubject(instanceId: string): string {
  if (!/^[0-9a-zA-Z_-]+$/.test(instanceId)) {
    throw new TdistError(
      "invalid_option",
      `instance id ${JSON.stringify(instanceId)} is not a valid NATS subject token`,
    );
  }
  return `${SUBJECT_PREFIX}${instanceId}`;
}

/** The reply subject of a stream's control messages. */
export function controlSubjectOf(responseSubject: string): string {
  return `${responseSubject}${CONTROL_SUFFIX}`;
}

/** The response subject a control message's reply subject belongs to, or undefined when it is not one. */
export function responseSubjectOfControl(controlSubject: string | undefined): string | undefined {
  if (controlSubject === undefined || !controlSubject.endsWith(CONTROL_SUFFIX)) return undefined;
  return controlSubject.slice(0, -CONTROL_SUFFIX.length);
}

export function isControlSubject(subject: string): boolean {
  return subject.endsWith(CONTROL_SUFFIX);
}

/** A zero-copy Buffer view of a NATS message payload. */
export function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export function encodeRequestMessage(path: string, headers: RequestHeaders, body: Uint8Array): Buffer {
  const payload = encodeRequestPayload(path, headers, body);
  const out = Buffer.allocUnsafe(1 + payload.length);
  out[0] = NatsMessageType.REQUEST;
  payload.copy(out, 1);
  return out;
}

/** Throws `protocol_error` on a malformed REQUEST. */
export function decodeRequestMessage(data: Buffer): RequestHead {
  if (data[0] !== NatsMessageType.REQUEST) throw new TdistError("protocol_error", "not a REQUEST message");
  return decodeRequestPayload(data.subarray(1));
}

const STOP_MESSAGE = Uint8Array.of(NatsMessageType.STOP);
const KILL_MESSAGE = Uint8Array.of(NatsMessageType.KILL);
const PING_MESSAGE = Uint8Array.of(NatsMessageType.PING);

/** A STOP, KILL or PING message (shared, never mutated). */
export function controlMessage(
  type: typeof NatsMessageType.STOP | typeof NatsMessageType.KILL | typeof NatsMessageType.PING,
): Uint8Array {
  return type === NatsMessageType.STOP ? STOP_MESSAGE : type === NatsMessageType.KILL ? KILL_MESSAGE : PING_MESSAGE;
}

export function encodeCreditMessage(credit: number): Buffer {
  const out = Buffer.allocUnsafe(5);
  out[0] = NatsMessageType.CREDIT;
  out.writeUInt32BE(credit, 1);
  return out;
}

/** The credit a CREDIT message grants; throws `protocol_error` when malformed. */
export function decodeCreditMessage(data: Buffer): number {
  if (data.length !== 5) throw new TdistError("protocol_error", "CREDIT message must carry a u32");
  return data.readUInt32BE(1);
}

export function encodeResponse(
  type: typeof NatsMessageType.DATA | typeof NatsMessageType.END | typeof NatsMessageType.HEARTBEAT,
  seq: number,
  body?: string | Uint8Array,
): Buffer {
  if (body === undefined) {
    const out = Buffer.allocUnsafe(RESPONSE_HEADER_BYTES);
    out[0] = type;
    out.writeUInt32BE(seq, 1);
    return out;
  }
  const bodyBytes = typeof body === "string" ? Buffer.byteLength(body) : body.length;
  const out = Buffer.allocUnsafe(RESPONSE_HEADER_BYTES + bodyBytes);
  out[0] = type;
  out.writeUInt32BE(seq, 1);
  if (typeof body === "string") out.write(body, RESPONSE_HEADER_BYTES, bodyBytes, "utf8");
  else out.set(body, RESPONSE_HEADER_BYTES);
  return out;
}

export function encodeErrorResponse(seq: number, error: WireError): Buffer {
  const message =
    error.message.length > MAX_ERROR_MESSAGE_CHARS
      ? `${error.message.slice(0, MAX_ERROR_MESSAGE_CHARS)}…`
      : error.message;
  const text = JSON.stringify({ code: error.code, category: error.category, message });
  const bodyBytes = Buffer.byteLength(text);
  const out = Buffer.allocUnsafe(RESPONSE_HEADER_BYTES + bodyBytes);
  out[0] = NatsMessageType.ERROR;
  out.writeUInt32BE(seq, 1);
  out.write(text, RESPONSE_HEADER_BYTES, bodyBytes, "utf8");
  return out;
}

export interface ResponseMessage {
  type:
    | typeof NatsMessageType.DATA
    | typeof NatsMessageType.END
    | typeof NatsMessageType.ERROR
    | typeof NatsMessageType.HEARTBEAT;
  seq: number;
  body: Buffer;
}

/** Throws `protocol_error` on anything that is not a response message. */
export function decodeResponse(data: Buffer): ResponseMessage {
  if (data.length < RESPONSE_HEADER_BYTES) throw new TdistError("protocol_error", "response message too short");
  const type = data[0];
  if (
    type !== NatsMessageType.DATA &&
    type !== NatsMessageType.END &&
    type !== NatsMessageType.ERROR &&
    type !== NatsMessageType.HEARTBEAT
  ) {
    throw new TdistError("protocol_error", `unexpected response message type ${String(type)}`);
  }
  return { type, seq: data.readUInt32BE(1), body: data.subarray(RESPONSE_HEADER_BYTES) };
}

/** Rebuilds the typed error an ERROR response carries. */
export function decodeErrorBody(body: Buffer): TdistError {
  let wire: unknown;
  try {
    wire = JSON.parse(body.toString("utf8"));
  } catch {
    wire = undefined;
  }
  return TdistError.fromWire(wire);
}
