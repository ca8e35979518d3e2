import type { Socket } from "node:net";
import { FRAME_HEADER_BYTES, type FrameTypeValue } from "./frame.js";

/** Flush at once when this many bytes are waiting; otherwise once per tick. */
const FLUSH_BYTES = 32 * 1024;
/** Frames are encoded straight into slabs of this size (larger frames get their own buffer). */
const SLAB_BYTES = 64 * 1024;

/**
 * Coalesces frames written in the same tick into one socket write, encoding
 * them directly into a slab (no per-frame allocation or copy). Before the
 * socket is attached (still connecting) frames wait here; `needsDrain` and
 * `drained()` let producers respect the socket's own backpressure.
 */
export class FrameWriter {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private slab = Buffer.allocUnsafe(SLAB_BYTES);
  /** Start of the bytes in `slab` not yet moved to `chunks`. */
  private slabStart = 0;
  private slabEnd = 0;
  private scheduled = false;
  private socket: Socket | undefined;
  private drainWaiters: Array<() => void> = [];
  private closed = false;
  private readonly flushCallback = (): void => this.flush();

  attach(socket: Socket): void {
    this.socket = socket;
    socket.on("drain", () => this.releaseDrainWaiters());
    if (this.pendingBytes > 0) this.flush();
  }

  /** Queues an already encoded frame. */
  write(frame: Buffer): void {
    if (this.closed) return;
    this.sealSlab();
    this.chunks.push(frame);
    this.bytes += frame.length;
    this.scheduleFlush();
  }

  /** Encodes a frame whose payload is UTF-8 text directly into the slab. */
  writeString(type: FrameTypeValue, streamId: number, text: string): void {
    if (this.closed) return;
    // Worst case 3 bytes per UTF-16 unit; exact length only when it might not fit.
    let room = FRAME_HEADER_BYTES + text.length * 3;
    if (room > SLAB_BYTES - this.slabEnd) {
      room = FRAME_HEADER_BYTES + Buffer.byteLength(text);
      if (room > SLAB_BYTES - this.slabEnd) this.newSlab(room);
    }
    const slab = this.slab;
    const at = this.slabEnd;
    const length = slab.write(text, at + FRAME_HEADER_BYTES, "utf8");
    slab.writeUInt32BE(5 + length, at);
    slab[at + 4] = type;
    slab.writeUInt32BE(streamId, at + 5);
    this.slabEnd = at + FRAME_HEADER_BYTES + length;
    this.scheduleFlush();
  }

  /** Encodes a header-only or small binary frame into the slab. */
  writeFrame(type: FrameTypeValue, streamId: number, payload?: Uint8Array): void {
    if (this.closed) return;
    const size = FRAME_HEADER_BYTES + (payload?.length ?? 0);
    if (size > SLAB_BYTES - this.slabEnd) this.newSlab(size);
    const slab = this.slab;
    const at = this.slabEnd;
    slab.writeUInt32BE(size - 4, at);
    slab[at + 4] = type;
    slab.writeUInt32BE(streamId, at + 5);
    if (payload && payload.length > 0) slab.set(payload, at + FRAME_HEADER_BYTES);
    this.slabEnd = at + size;
    this.scheduleFlush();
  }

  /** True while the socket's buffer is over its high-water mark. */
  get needsDrain(): boolean {
    return this.socket?.writableNeedDrain === true || (this.socket === undefined && this.pendingBytes >= FLUSH_BYTES);
  }

  /** Resolves when the socket drains or the writer closes. */
  drained(): Promise<void> {
    if (!this.needsDrain || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  flush(): void {
    this.scheduled = false;
    const socket = this.socket;
    if (socket === undefined || this.closed || this.pendingBytes === 0) return;
    this.sealSlab();
    const data = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.bytes);
    this.chunks = [];
    this.bytes = 0;
    if (!socket.destroyed) socket.write(data);
  }

  close(): void {
    this.closed = true;
    this.chunks = [];
    this.bytes = 0;
    this.slabStart = this.slabEnd;
    this.releaseDrainWaiters();
  }

  private get pendingBytes(): number {
    return this.bytes + (this.slabEnd - this.slabStart);
  }

  private scheduleFlush(): void {
    if (this.socket === undefined) return;
    if (this.pendingBytes >= FLUSH_BYTES) {
      this.flush();
    } else if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flushCallback);
    }
  }

  /** Moves the slab's pending bytes into `chunks`; the slab is never written behind them again. */
  private sealSlab(): void {
    if (this.slabEnd === this.slabStart) return;
    this.chunks.push(this.slab.subarray(this.slabStart, this.slabEnd));
    this.bytes += this.slabEnd - this.slabStart;
    this.slabStart = this.slabEnd;
  }

  private newSlab(minimum: number): void {
    this.sealSlab();
    this.slab = Buffer.allocUnsafe(Math.max(SLAB_BYTES, minimum));
    this.slabStart = 0;
    this.slabEnd = 0;
  }

  private releaseDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
