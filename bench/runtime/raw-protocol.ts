/**
 * The baseline: a minimal framed protocol over raw TCP, written here so the
 * benchmark measures what the runtime adds on top of sockets and JSON.
 *
 * frame := u32 BE length | u32 BE streamId | JSON payload (empty payload = end of stream)
 */
import type { Socket } from "node:net";

export interface BenchMessage {
  index: number;
  token: number;
  text: string;
}

export function message(index: number): BenchMessage {
  return { index, token: 1234, text: "hello" };
}

export function frame(streamId: number, payload: string): Buffer {
  const length = Buffer.byteLength(payload);
  const out = Buffer.allocUnsafe(8 + length);
  out.writeUInt32BE(4 + length, 0);
  out.writeUInt32BE(streamId, 4);
  out.write(payload, 8, length, "utf8");
  return out;
}

/** Calls `onFrame(streamId, payloadOrUndefinedAtEnd)` for each complete frame. */
export function frameReader(onFrame: (streamId: number, payload: Buffer | undefined) => void): (chunk: Buffer) => void {
  let pending: Buffer | undefined;
  return (chunk) => {
    let buffer = pending ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    while (buffer.length - at >= 4) {
      const length = buffer.readUInt32BE(at);
      if (buffer.length - at < 4 + length) break;
      const streamId = buffer.readUInt32BE(at + 4);
      onFrame(streamId, length === 4 ? undefined : buffer.subarray(at + 8, at + 4 + length));
      at += 4 + length;
    }
    pending = at < buffer.length ? buffer.subarray(at) : undefined;
    buffer = Buffer.alloc(0);
  };
}

/** Batches frames into ~64 KiB writes and waits for `drain` when the socket is full. */
export class BatchedWriter {
  private chunks: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly socket: Socket) {}

  async write(data: Buffer): Promise<void> {
    this.chunks.push(data);
    this.bytes += data.length;
    if (this.bytes >= 64 * 1024) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.bytes === 0) return;
    const data = Buffer.concat(this.chunks, this.bytes);
    this.chunks = [];
    this.bytes = 0;
    if (!this.socket.write(data)) await new Promise<void>((resolve) => this.socket.once("drain", () => resolve()));
  }
}
