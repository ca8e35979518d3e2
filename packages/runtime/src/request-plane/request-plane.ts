import type { Context } from "../context.js";
import type { Handler, ResponseStream, StreamOutcome } from "../handler.js";

/** How other processes reach an instance; stored in its discovery record. */
export type TransportAddress = { tcp: string } | { nats: string };

/** A served endpoint as the request plane server knows it. */
export interface ServedHandler {
  readonly path: string;
  readonly handler: Handler;
  /** Running requests, for draining. */
  readonly inFlight: Set<{ kill(reason?: unknown): void; readonly done: boolean }>;
}

/** The serving half of a request plane: one per runtime. */
export interface RequestPlaneServer {
  readonly kind: "tcp" | "nats";
  /** Starts listening if needed; returns the address to advertise for `path`. */
  register(entry: ServedHandler): Promise<TransportAddress>;
  unregister(path: string): void;
  /** Refuse new requests with `shutting_down` from now on. */
  stopAccepting(): void;
  close(): Promise<void>;
}

/** What the caller hears of one stream's life. */
export interface StreamHooks {
  /** The first response item arrived: at most once, and before `onSettled`. */
  onFirstResponse?: () => void;
  /** The stream ended, however it ended (including a failure to connect): exactly once. */
  onSettled?: (outcome: StreamOutcome) => void;
}

export interface OpenStreamOptions extends StreamHooks {
  path: string;
  instanceId: string;
  context: Context;
  deadline?: number;
}

/** The calling half of a request plane: opens response streams to an instance. */
export interface RequestPlaneClient {
  readonly kind: "tcp" | "nats";
  open<T>(address: TransportAddress, request: unknown, options: OpenStreamOptions): ResponseStream<T>;
  /** Subscribe to connection loss, so clients can drop instances at once. */
  onDisconnect(listener: (address: TransportAddress) => void): () => void;
  close(): Promise<void>;
}
