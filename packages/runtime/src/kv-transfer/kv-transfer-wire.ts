import { TdistError, type WireError } from "../errors/tdist-error.js";

/**
 * The KV transfer's TCP wire format, one connection per fetch:
 *
 * ```
 * request  := u32 BE length | JSON { transferId }            (receiver → sender, at most 4 KiB)
 * response := frame*                                          (sender → receiver)
 * frame    := u8 type | u32 BE length | payload
 * type     := DATA (payload: bytes) | END (empty) | ERROR (JSON { code, category, message })
 * ```
 *
 * DATA payloads are streamed through as they arrive, never assembled, so no
 * frame limit applies to them; a source chunk of any size is one frame.
 */
export const KvFrameType = { DATA: 1, END: 2, ERROR: 3 } as const;

export const maxRequestBytes = 4096;
const maxErrorBytes = 64 * 1024;
const headerBytes = 5;

export function encodeKvRequest(transferId: string): Buffer {
  const body = Buffer.from(JSON.stringify({ transferId }));
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.byteLength, 0);
  return Buffer.concat([header, body]);
}

/** Accumulates the request; returns the transfer id once complete, undefined while more bytes are needed. */
export class KvRequestReader {
  private buffered = Buffer.alloc(0);

  push(chunk: Buffer): string | undefined {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    if (this.buffered.byteLength < 4) return undefined;
    const length = this.buffered.readUInt32BE(0);
    if (length > maxRequestBytes) throw new TdistError("protocol_error", `KV transfer request of ${length} bytes`);
    if (this.buffered.byteLength < 4 + length) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(this.buffered.subarray(4, 4 + length).toString("utf8"));
    } catch (err) {
      throw TdistError.wrap(err, "protocol_error", "bad KV transfer request");
    }
    const transferId = (parsed as { transferId?: unknown } | null)?.transferId;
    if (typeof transferId !== "string") throw new TdistError("protocol_error", "KV transfer request without an id");
    return transferId;
  }
}

export function kvFrameHeader(type: number, length: number): Buffer {
  const header = Buffer.allocUnsafe(headerBytes);
  header[0] = type;
  header.writeUInt32BE(length, 1);
  return header;
}

export function kvErrorFrame(error: TdistError): Buffer {
  const payload = Buffer.from(JSON.stringify(error.toWire() satisfies WireError));
  return Buffer.concat([kvFrameHeader(KvFrameType.ERROR, payload.byteLength), payload]);
}

export type KvFrameEvent = { kind: "data"; bytes: Buffer } | { kind: "end" } | { kind: "error"; error: TdistError };

/** Splits the sender's byte stream into events, passing DATA through as slices of the socket's buffers. */
export class KvFrameReader {
  private header = Buffer.alloc(headerBytes);
  private headerFill = 0;
  private type = 0;
  private remaining = 0;
  private inFrame = false;
  private errorParts: Buffer[] = [];

  *push(chunk: Buffer): Generator<KvFrameEvent> {
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (!this.inFrame) {
        const take = Math.min(headerBytes - this.headerFill, chunk.byteLength - offset);
        chunk.copy(this.header, this.headerFill, offset, offset + take);
        this.headerFill += take;
        offset += take;
        if (this.headerFill < headerBytes) return;
        this.headerFill = 0;
        this.type = this.header[0] ?? 0;
        this.remaining = this.header.readUInt32BE(1);
        this.inFrame = true;
        if (this.type === KvFrameType.END) {
          if (this.remaining !== 0) throw new TdistError("protocol_error", "KV transfer END frame with a payload");
          this.inFrame = false;
          yield { kind: "end" };
          return;
        }
        if (this.type === KvFrameType.ERROR && this.remaining > maxErrorBytes) {
          throw new TdistError("protocol_error", "KV transfer ERROR frame too large");
        }
        if (this.type !== KvFrameType.DATA && this.type !== KvFrameType.ERROR) {
          throw new TdistError("protocol_error", `unknown KV transfer frame type ${this.type}`);
        }
      }
      const take = Math.min(this.remaining, chunk.byteLength - offset);
      const part = chunk.subarray(offset, offset + take);
      offset += take;
      this.remaining -= take;
      if (this.type === KvFrameType.DATA) {
        if (part.byteLength > 0) yield { kind: "data", bytes: part };
      } else {
        this.errorParts.push(part);
      }
      if (this.remaining === 0) {
        this.inFrame = false;
        if (this.type === KvFrameType.ERROR) {
          yield { kind: "error", error: parseError(Buffer.concat(this.errorParts)) };
          return;
        }
      }
    }
  }
}

function parseError(payload: Buffer): TdistError {
  try {
    return TdistError.fromWire(JSON.parse(payload.toString("utf8")));
  } catch {
    return new TdistError("protocol_error", "malformed KV transfer ERROR frame");
  }
}
