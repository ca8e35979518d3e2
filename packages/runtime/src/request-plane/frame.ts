import { TdistError } from "../errors/tdist-error.js";

/**
 * TCP request plane framing (docs/architecture.md, "TCP request plane wire format"):
 *
 * ```
 * frame := u32 BE length | u8 type | u32 BE streamId | payload
 * ```
 * `length` counts everything after itself (type, stream id, payload).
 */
export const FrameType = {
  REQUEST: 1,
  DATA: 2,
  END: 3,
  ERROR: 4,
  STOP: 5,
  KILL: 6,
  CREDIT: 7,
  /** Caller to server, stream 0: answered at once with PONG, so a hung server process is noticed. */
  PING: 8,
  PONG: 9,
} as const;

export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** Bytes before the payload: length (4), type (1), stream id (4). */
export const FRAME_HEADER_BYTES = 9;

export interface Frame {
  type: FrameTypeValue;
  streamId: number;
  payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** Encodes a frame header into a fresh buffer followed by the payload in one allocation. */
export function encodeFrame(type: FrameTypeValue, streamId: number, payload: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32BE(5 + payload.length, 0);
  out[4] = type;
  out.writeUInt32BE(streamId, 5);
  if (payload.length > 0) out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** Encodes a frame whose payload is a UTF-8 string, without an intermediate buffer. */
export function encodeStringFrame(type: FrameTypeValue, streamId: number, text: string): Buffer {
  const byteLength = Buffer.byteLength(text);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + byteLength);
  out.writeUInt32BE(5 + byteLength, 0);
  out[4] = type;
  out.writeUInt32BE(streamId, 5);
  out.write(text, FRAME_HEADER_BYTES, byteLength, "utf8");
  return out;
}

export function encodeCredit(streamId: number, credit: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + 4);
  out.writeUInt32BE(9, 0);
  out[4] = FrameType.CREDIT;
  out.writeUInt32BE(streamId, 5);
  out.writeUInt32BE(credit, 9);
  return out;
}

export interface RequestHead {
  path: string;
  headers: RequestHeaders;
  body: Buffer;
}

/** Per-request metadata carried in the REQUEST frame's JSON headers. */
export interface RequestHeaders {
  requestId: string;
  /** Initial credit window the client grants for responses. */
  credit: number;
  /** Absolute deadline in ms since the epoch, when the caller set one. */
  deadline?: number;
  annotations?: Record<string, string>;
}

export function encodeRequestPayload(path: string, headers: RequestHeaders, body: Uint8Array): Buffer {
  const pathBytes = Buffer.from(path);
  const headerBytes = Buffer.from(JSON.stringify(headers));
  if (pathBytes.length > 0xffff || headerBytes.length > 0xffff) {
    throw new TdistError("bad_request", "request path or headers exceed 65535 bytes");
  }
  const out = Buffer.allocUnsafe(4 + pathBytes.length + headerBytes.length + body.length);
  let at = out.writeUInt16BE(pathBytes.length, 0);
  at += pathBytes.copy(out, at);
  at = out.writeUInt16BE(headerBytes.length, at);
  at += headerBytes.copy(out, at);
  out.set(body, at);
  return out;
}

export function decodeRequestPayload(payload: Buffer): RequestHead {
  if (payload.length < 4) throw new TdistError("protocol_error", "REQUEST frame too short");
  const pathLength = payload.readUInt16BE(0);
  const headersAt = 2 + pathLength;
  if (payload.length < headersAt + 2) throw new TdistError("protocol_error", "REQUEST frame path overruns payload");
  const path = payload.toString("utf8", 2, headersAt);
  const headersLength = payload.readUInt16BE(headersAt);
  const bodyAt = headersAt + 2 + headersLength;
  if (payload.length < bodyAt) throw new TdistError("protocol_error", "REQUEST frame headers overrun payload");
  let headers: RequestHeaders;
  try {
    headers = JSON.parse(payload.toString("utf8", headersAt + 2, bodyAt)) as RequestHeaders;
  } catch (err) {
    throw TdistError.wrap(err, "protocol_error", "REQUEST headers are not JSON");
  }
  if (typeof headers !== "object" || headers === null || typeof headers.requestId !== "string") {
    throw new TdistError("protocol_error", "REQUEST headers lack a requestId");
  }
  if (!Number.isInteger(headers.credit) || headers.credit < 1) {
    throw new TdistError("protocol_error", "REQUEST headers lack a positive credit");
  }
  if (headers.deadline !== undefined && !Number.isFinite(headers.deadline)) {
    throw new TdistError("protocol_error", "REQUEST deadline is not a number");
  }
  if (headers.annotations !== undefined && !isStringRecord(headers.annotations)) {
    throw new TdistError("protocol_error", "REQUEST annotations are not an object of strings");
  }
  return { path, headers, body: payload.subarray(bodyAt) };
}

function isStringRecord(value: unknown): value is Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  return Object.values(value).every((entry) => typeof entry === "string");
}

/** The header of a frame too large to accept, passed to `onOversize` while its bytes are skipped. */
export interface OversizeFrame {
  type: FrameTypeValue;
  streamId: number;
  /** The whole frame's size, length prefix included. */
  bytes: number;
}

/**
 * Incremental frame parser. Feed it socket chunks; it calls `onFrame` for each
 * complete frame. Length is checked before any payload is buffered, so an
 * oversize frame is refused without being allocated: with `onOversize` it is
 * reported with its header and its payload skipped as it arrives (the
 * connection survives; one stream fails), without it `push` throws.
 */
export class FrameParser {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Size of the incomplete frame at the head of `pending`, once its length is known. */
  private needed = 0;
  /** Bytes of an oversize frame still to be dropped. */
  private skipping = 0;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly onFrame: (frame: Frame) => void,
    private readonly onOversize?: (frame: OversizeFrame) => void,
  ) {}

  /** Throws a TdistError (`frame_too_large` or `protocol_error`) on invalid input. */
  push(chunk: Buffer): void {
    if (this.skipping > 0) {
      if (chunk.length <= this.skipping) {
        this.skipping -= chunk.length;
        return;
      }
      chunk = chunk.subarray(this.skipping);
      this.skipping = 0;
    }
    let buffer: Buffer;
    if (this.pendingBytes === 0) {
      buffer = chunk;
    } else {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      // Large frames arrive in many chunks: join them once, when the frame is complete.
      if (this.pendingBytes < this.needed) return;
      buffer = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
    }
    this.needed = 0;
    let at = 0;
    while (buffer.length - at >= 4) {
      const length = buffer.readUInt32BE(at);
      if (length < 5) throw new TdistError("protocol_error", `invalid frame length ${length}`);
      const oversize = length + 4 > this.maxFrameBytes;
      if (oversize && this.onOversize === undefined) throw this.tooLarge(length + 4);
      if (oversize && buffer.length - at < FRAME_HEADER_BYTES) {
        this.needed = FRAME_HEADER_BYTES;
        break;
      }
      if (!oversize && buffer.length - at < length + 4) {
        this.needed = length + 4;
        break;
      }
      const type = buffer[at + 4] as number;
      if (type < FrameType.REQUEST || type > FrameType.PONG) {
        throw new TdistError("protocol_error", `unknown frame type ${type}`);
      }
      const streamId = buffer.readUInt32BE(at + 5);
      if (oversize) {
        const available = buffer.length - at;
        this.skipping = Math.max(0, length + 4 - available);
        at = Math.min(buffer.length, at + length + 4);
        this.onOversize?.({ type: type as FrameTypeValue, streamId, bytes: length + 4 });
        if (this.skipping > 0) return;
        continue;
      }
      const payload = buffer.subarray(at + FRAME_HEADER_BYTES, at + 4 + length);
      at += 4 + length;
      this.onFrame({ type: type as FrameTypeValue, streamId, payload });
    }
    if (at < buffer.length) {
      const rest = buffer.subarray(at);
      this.pending.push(rest);
      this.pendingBytes = rest.length;
    }
  }

  private tooLarge(bytes: number): TdistError {
    return new TdistError(
      "frame_too_large",
      `frame of ${bytes} bytes exceeds the maximum of ${this.maxFrameBytes} bytes`,
    );
  }
}
