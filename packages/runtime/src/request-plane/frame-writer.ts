import type { Socket } from "node:net";

/** Flush at once when this many bytes are waiting; otherwise once per tick. */
const FLUSH_BYTES = 64 * 1024;

/**
 * Coalesces frames written in the same tick into one socket write. Before the
 * socket is attached (still connecting) frames wait here; `needsDrain` and
 * `drained()` let producers respect the socket's own backpressure.
 */
export class FrameWriter {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private scheduled = false;
  private socket: Socket | undefined;
  private drainWaiters: Array<() => void> = [];
  private closed = false;
  private readonly flushCallback = (): void => this.flush();

  attach(socket: Socket): void {
    this.socket = socket;
    socket.on("drain", () => this.releaseDrainWaiters());
    if (this.bytes > 0) this.flush();
  }

  write(frame: Buffer): void {
    if (this.closed) return;
    this.chunks.push(frame);
    this.bytes += frame.length;
    if (this.socket === undefined) return;
    if (this.bytes >= FLUSH_BYTES) {
      this.flush();
    } else if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flushCallback);
    }
  }

  /** True while the socket's buffer is over its high-water mark. */
  get needsDrain(): boolean {
    return this.socket?.writableNeedDrain === true || (this.socket === undefined && this.bytes >= FLUSH_BYTES);
  }

  /** Resolves when the socket drains or the writer closes. */
  drained(): Promise<void> {
    if (!this.needsDrain || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  flush(): void {
    this.scheduled = false;
    const socket = this.socket;
    if (socket === undefined || this.bytes === 0 || this.closed) return;
    const data = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.bytes);
    this.chunks = [];
    this.bytes = 0;
    if (!socket.destroyed) socket.write(data);
  }

  close(): void {
    this.closed = true;
    this.chunks = [];
    this.bytes = 0;
    this.releaseDrainWaiters();
  }

  private releaseDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
