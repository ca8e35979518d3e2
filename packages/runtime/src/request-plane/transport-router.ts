import { TdistError } from "../errors/tdist-error.js";
import type { ResponseStream } from "../handler.js";
import { DeferredResponseStream } from "./deferred-response-stream.js";
import type { OpenStreamOptions, RequestPlaneClient, TransportAddress } from "./request-plane.js";

/**
 * The runtime's calling side: sends each request over the transport its
 * instance advertises, so one client reaches TCP and NATS instances alike.
 * The plane not configured as the runtime's own is connected on first use.
 */
export class TransportRouter implements RequestPlaneClient {
  readonly kind: "tcp" | "nats";
  private readonly planes = new Map<"tcp" | "nats", RequestPlaneClient>();
  private readonly opening = new Map<"tcp" | "nats", Promise<RequestPlaneClient>>();
  private readonly listeners = new Set<(address: TransportAddress) => void>();
  private closed = false;

  constructor(
    primary: RequestPlaneClient,
    private readonly connect: (kind: "tcp" | "nats") => Promise<RequestPlaneClient>,
  ) {
    this.kind = primary.kind;
    this.adopt(primary);
  }

  open<T>(address: TransportAddress, request: unknown, options: OpenStreamOptions): ResponseStream<T> {
    const kind = "tcp" in address ? "tcp" : "nats";
    const plane = this.planes.get(kind);
    if (plane) return plane.open<T>(address, request, options);
    const opened = this.plane(kind).then((client) => client.open<T>(address, request, options));
    opened.catch((err: unknown) =>
      options.onSettled?.({ status: "failed", error: TdistError.wrap(err, "cannot_connect") }),
    );
    return new DeferredResponseStream<T>(options.context.requestId, options.instanceId, opened);
  }

  onDisconnect(listener: (address: TransportAddress) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.opening.values()]);
    await Promise.all([...this.planes.values()].map((plane) => plane.close()));
    this.planes.clear();
  }

  private plane(kind: "tcp" | "nats"): Promise<RequestPlaneClient> {
    let opening = this.opening.get(kind);
    if (!opening) {
      if (this.closed) return Promise.reject(new TdistError("shutting_down", "runtime is shutting down"));
      opening = this.connect(kind).then((client) => {
        if (this.closed) {
          void client.close();
          throw new TdistError("shutting_down", "runtime is shutting down");
        }
        this.adopt(client);
        return client;
      });
      opening.catch(() => this.opening.delete(kind));
      this.opening.set(kind, opening);
    }
    return opening;
  }

  private adopt(client: RequestPlaneClient): void {
    this.planes.set(client.kind, client);
    client.onDisconnect((address) => {
      for (const listener of this.listeners) listener(address);
    });
  }
}
