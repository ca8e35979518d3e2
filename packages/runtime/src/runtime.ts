import { Client, type ClientHost, type ClientOptions } from "./client/client.js";
import { instanceKey } from "./client/instance.js";
import { type Endpoint, Namespace } from "./component.js";
import type { Discovery, Lease } from "./discovery/discovery.js";
import { MemoryDiscovery } from "./discovery/memory-discovery.js";
import { TdistError } from "./errors/tdist-error.js";
import type { EventPlane } from "./event-plane/event-plane.js";
import { MemoryEventPlane } from "./event-plane/memory-event-plane.js";
import type { Handler } from "./handler.js";
import type { KvTransferPlane } from "./kv-transfer/kv-transfer.js";
import { RuntimeKvTransferPlane } from "./kv-transfer/kv-transfer-plane.js";
import type { Logger } from "./logger.js";
import type { RequestPlaneClient, RequestPlaneServer, ServedHandler } from "./request-plane/request-plane.js";
import { TcpRequestClient } from "./request-plane/tcp-request-client.js";
import { TcpRequestServer } from "./request-plane/tcp-server.js";
import { TransportRouter } from "./request-plane/transport-router.js";
import { type ResolvedRuntimeOptions, type RuntimeOptions, resolveRuntimeOptions } from "./runtime-options.js";
import { delay } from "./util/abort.js";
import { MemoryWorkQueues } from "./work-queue/memory-work-queue.js";
import type { WorkQueues } from "./work-queue/work-queue.js";

export type RuntimeState = "starting" | "running" | "draining" | "stopped";

export interface ServeOptions {
  /** Free-form metadata stored with the instance record (model name, limits, ...). */
  metadata?: Record<string, unknown>;
}

/** A served endpoint instance. */
export interface ServedEndpoint {
  readonly instanceId: string;
  readonly path: string;
  /** Requests running now. */
  readonly inFlight: number;
  /** Deregisters, then lets in-flight requests finish for up to `graceMs` before killing them. */
  stop(options?: { graceMs?: number }): Promise<void>;
}

export interface ShutdownOptions {
  graceMs?: number;
}

/**
 * The distributed runtime: one per process (or several in one process for
 * tests). It owns the discovery handle, the request plane and the primary
 * lease whose id is this process's instance id.
 *
 * ```ts
 * await using runtime = await DistributedRuntime.create();
 * const endpoint = runtime.namespace("tdist").component("backend").endpoint("generate");
 * await endpoint.serve(async function* (req: string) { yield req.toUpperCase(); });
 * ```
 */
export class DistributedRuntime implements ClientHost {
  private stateValue: RuntimeState = "starting";
  private lease: Lease | undefined;
  private leasePromise: Promise<Lease> | undefined;
  private readonly served = new Map<string, { entry: ServedHandler; key: string }>();
  private readonly clients = new Set<Client<unknown, unknown>>();
  private readonly leasedKeys = new Set<string>();
  private shutdownPromise: Promise<void> | undefined;
  private serverValue: RequestPlaneServer | undefined;
  private eventsPromise: Promise<{ plane: EventPlane; queues: WorkQueues; close(): Promise<void> }> | undefined;
  private eventPlanePromise: Promise<EventPlane> | undefined;
  private workQueuesPromise: Promise<WorkQueues> | undefined;
  private kvTransferPlane: RuntimeKvTransferPlane | undefined;

  private constructor(
    readonly options: ResolvedRuntimeOptions,
    readonly discovery: Discovery,
    private readonly ownsDiscovery: boolean,
    readonly requestPlane: RequestPlaneClient,
    /** Aborts at shutdown: connections opened on first use stop waiting for their server. */
    private readonly closing: AbortController,
  ) {}

  /**
   * Builds a runtime from options; defaults come from the `TDIST_*` environment.
   * In cluster mode it waits up to `startupTimeoutMs` for etcd (and for NATS
   * when the request plane is NATS), then fails with `dependency_unavailable`;
   * `options.signal` cancels the wait.
   */
  static async create(options: RuntimeOptions = {}): Promise<DistributedRuntime> {
    const resolved = resolveRuntimeOptions(options);
    const closing = new AbortController();
    const { discovery, owned } = await openDiscovery(resolved, options.signal);
    let requestPlane: RequestPlaneClient;
    try {
      requestPlane = await openRequestPlaneClient(resolved, options.signal, closing.signal);
    } catch (err) {
      if (owned) await discovery.close();
      throw err;
    }
    const runtime = new DistributedRuntime(resolved, discovery, owned, requestPlane, closing);
    runtime.stateValue = "running";
    return runtime;
  }

  /** The event plane (KV events, metrics): memory in embedded mode, NATS in cluster mode. Opened on first use. */
  eventPlane(): Promise<EventPlane> {
    this.eventPlanePromise ??= this.openEvents().then((events) => events.plane);
    return this.eventPlanePromise;
  }

  /** Work queues (prefill queue, jobs): memory in embedded mode, JetStream in cluster mode. Opened on first use. */
  workQueues(): Promise<WorkQueues> {
    this.workQueuesPromise ??= this.openEvents().then((events) => events.queues);
    return this.workQueuesPromise;
  }

  private openEvents(): Promise<{ plane: EventPlane; queues: WorkQueues; close(): Promise<void> }> {
    this.eventsPromise ??= openEventBackends(this.options, this.closing.signal);
    return this.eventsPromise;
  }

  /**
   * The KV transfer plane: chunked byte streams between runtimes (a prefill
   * worker offers a KV cache, a decode worker fetches it). Its TCP listener
   * opens on the first offer; a fetch in this process is a direct hand-off.
   */
  get kvTransfer(): KvTransferPlane {
    this.kvTransferPlane ??= new RuntimeKvTransferPlane({
      ...this.options.kvTransfer,
      connectTimeoutMs: this.options.connectTimeoutMs,
      tls: this.options.tcpTls,
      logger: this.logger,
    });
    // First asked for after shutdown began: closed at once, so it refuses offers like the rest.
    if (this.stateValue !== "running") void this.kvTransferPlane.close();
    return this.kvTransferPlane;
  }

  get state(): RuntimeState {
    return this.stateValue;
  }

  /** Carries `{ runtime: name }` in every line. */
  get logger(): Logger {
    return this.options.logger;
  }

  /** The name this runtime's log lines carry (`options.name`, or a random `rt-` id). */
  get name(): string {
    return this.options.name;
  }

  /** This process's instance id (its primary lease id), once it serves an endpoint. */
  get instanceId(): string | undefined {
    return this.lease?.id;
  }

  namespace(name: string): Namespace {
    return new Namespace(this, name);
  }

  /** The primary lease, granted on first use and kept alive by discovery. */
  primaryLease(): Promise<Lease> {
    this.leasePromise ??= this.discovery.grantLease(this.options.leaseTtlMs).then((lease) => {
      this.lease = lease;
      lease.lost.addEventListener(
        "abort",
        () => {
          if (this.stateValue === "running") {
            this.logger.error({ leaseId: lease.id, err: lease.lost.reason }, "primary lease lost for good");
          }
        },
        { once: true },
      );
      return lease;
    });
    return this.leasePromise;
  }

  /** @internal Called by `Endpoint.serve`. */
  async serveEndpoint(endpoint: Endpoint, handler: Handler, options: ServeOptions): Promise<ServedEndpoint> {
    this.assertRunning();
    const path = endpoint.path;
    if (this.served.has(path)) throw new TdistError("already_serving", `endpoint ${path} is already served here`);
    const entry: ServedHandler = { path, handler, inFlight: new Set() };
    const lease = await this.primaryLease();
    const server = await this.server();
    const transport = await server.register(entry);
    const key = instanceKey(endpoint.component.namespace.name, endpoint.component.name, endpoint.name, lease.id);
    this.served.set(path, { entry, key });
    const record = {
      instanceId: lease.id,
      namespace: endpoint.component.namespace.name,
      component: endpoint.component.name,
      endpoint: endpoint.name,
      transport,
      metadata: options.metadata ?? {},
      registeredAt: Date.now(),
    };
    try {
      await this.discovery.put(key, JSON.stringify(record), { lease });
    } catch (err) {
      this.served.delete(path);
      server.unregister(path);
      throw TdistError.wrap(err, "discovery_error", `cannot register ${path}`);
    }
    this.logger.info({ endpoint: path, instanceId: lease.id, transport }, "serving endpoint");
    return {
      instanceId: lease.id,
      path,
      get inFlight() {
        return entry.inFlight.size;
      },
      stop: (stopOptions) => this.stopServing(path, stopOptions?.graceMs ?? this.options.shutdownGraceMs),
    };
  }

  /**
   * Puts `key` under the primary lease, like an instance record: it vanishes
   * with the process and is deleted first at shutdown (model cards use this).
   */
  async registerLeasedKey(key: string, value: string): Promise<void> {
    this.assertRunning();
    const lease = await this.primaryLease();
    await this.discovery.put(key, value, { lease });
    this.leasedKeys.add(key);
  }

  async unregisterLeasedKey(key: string): Promise<void> {
    if (this.leasedKeys.delete(key)) await this.deregister(key);
  }

  /** @internal Called by `Endpoint.client`. */
  async createClient<Req, Resp>(endpoint: Endpoint, options: ClientOptions): Promise<Client<Req, Resp>> {
    this.assertRunning();
    const client = await Client.create<Req, Resp>(
      this,
      endpoint.component.namespace.name,
      endpoint.component.name,
      endpoint.name,
      { inhibitMs: this.options.inhibitMs, ...options },
    );
    this.clients.add(client as Client<unknown, unknown>);
    return client;
  }

  /** @internal The local plane: a handler this runtime serves at `path`. */
  localHandler(path: string): ServedHandler | undefined {
    if (this.stateValue !== "running") return undefined;
    return this.served.get(path)?.entry;
  }

  /**
   * Deregisters every instance first (clients stop routing here), stops
   * accepting, lets in-flight streams finish for up to the grace period, kills
   * what remains, then closes connections, clients and the lease.
   */
  shutdown(options: ShutdownOptions = {}): Promise<void> {
    this.shutdownPromise ??= this.runShutdown(options.graceMs ?? this.options.shutdownGraceMs);
    return this.shutdownPromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  private async runShutdown(graceMs: number): Promise<void> {
    this.stateValue = "draining";
    this.closing.abort(new TdistError("shutting_down", "runtime is shutting down"));
    const served = [...this.served.values()];
    const keys = [...this.leasedKeys, ...served.map(({ key }) => key)];
    this.leasedKeys.clear();
    await Promise.all(keys.map((key) => this.deregister(key)));
    this.serverValue?.stopAccepting();
    await drain(
      served.map(({ entry }) => entry),
      graceMs,
    );
    for (const { entry } of served) this.serverValue?.unregister(entry.path);
    this.served.clear();
    await Promise.all([...this.clients].map((client) => client.close()));
    this.clients.clear();
    // After the drain: a handler that offered has returned its handle, and its open offers are released now.
    await this.kvTransferPlane?.close();
    await this.serverValue?.close();
    await this.requestPlane.close();
    if (this.eventsPromise) {
      await this.eventsPromise.then(
        (events) => events.close(),
        () => {},
      );
    }
    if (this.lease) await this.lease.revoke().catch(() => {});
    if (this.ownsDiscovery) await this.discovery.close();
    this.stateValue = "stopped";
    this.logger.info({}, "runtime stopped");
  }

  private async stopServing(path: string, graceMs: number): Promise<void> {
    const served = this.served.get(path);
    if (served === undefined) return;
    this.served.delete(path);
    await this.deregister(served.key);
    await drain([served.entry], graceMs);
    this.serverValue?.unregister(path);
  }

  private async deregister(key: string): Promise<void> {
    try {
      await this.discovery.delete(key);
    } catch (err) {
      this.logger.warn({ err, key }, "cannot deregister; the lease will expire it");
    }
  }

  private async server(): Promise<RequestPlaneServer> {
    if (this.serverValue) return this.serverValue;
    const plane = this.options.requestPlane;
    if (plane.kind === "nats") {
      // The NATS server listens on a subject named after this runtime's instance id (its primary lease).
      const lease = await this.primaryLease();
      const { NatsRequestServer } = await import("./request-plane/nats-request-server.js");
      // A concurrent `serve` may have made the server while this call awaited.
      if (this.serverValue) return this.serverValue;
      this.serverValue = new NatsRequestServer({
        url: plane.url,
        ...this.options.nats,
        instanceId: lease.id,
        maxFrameBytes: this.options.maxFrameBytes,
        // Reaching the NATS server is a wait for a dependency, not a connection to a peer.
        connectTimeoutMs: this.options.startupTimeoutMs,
        codec: this.options.codec,
        logger: this.logger,
      });
      return this.serverValue;
    }
    this.serverValue = new TcpRequestServer({
      host: plane.host,
      port: plane.port,
      ...(plane.advertiseHost ? { advertiseHost: plane.advertiseHost } : {}),
      maxFrameBytes: this.options.maxFrameBytes,
      codec: this.options.codec,
      logger: this.logger,
      tls: this.options.tcpTls,
    });
    return this.serverValue;
  }

  private assertRunning(): void {
    if (this.stateValue !== "running") {
      throw new TdistError("shutting_down", `runtime is ${this.stateValue}`);
    }
  }
}

async function drain(entries: ServedHandler[], graceMs: number): Promise<void> {
  const deadline = Date.now() + graceMs;
  const busy = (): boolean => entries.some((entry) => entry.inFlight.size > 0);
  while (busy() && Date.now() < deadline) await delay(Math.min(10, Math.max(1, deadline - Date.now())));
  const reason = new TdistError("shutting_down", "shutdown grace period expired");
  for (const entry of entries) for (const run of [...entry.inFlight]) run.kill(reason);
}

async function openDiscovery(
  options: ResolvedRuntimeOptions,
  signal: AbortSignal | undefined,
): Promise<{ discovery: Discovery; owned: boolean }> {
  const given = options.discovery;
  if ("grantLease" in given) return { discovery: given, owned: false };
  if (given.kind === "memory") return { discovery: new MemoryDiscovery(given.store), owned: true };
  const { EtcdDiscovery } = await import("./discovery/etcd-discovery.js");
  const discovery = await EtcdDiscovery.connect({
    endpoints: [...given.endpoints],
    ...(given.auth ? { auth: given.auth } : {}),
    ...(given.tls ? { tls: given.tls } : {}),
    logger: options.logger,
    dialTimeoutMs: options.startupTimeoutMs,
    signal,
  });
  return { discovery, owned: true };
}

async function openEventBackends(
  options: ResolvedRuntimeOptions,
  signal: AbortSignal,
): Promise<{ plane: EventPlane; queues: WorkQueues; close(): Promise<void> }> {
  const selection = options.eventPlane;
  if (selection.kind === "memory") {
    const plane = new MemoryEventPlane({ logger: options.logger, ...(selection.bus ? { bus: selection.bus } : {}) });
    const queues = new MemoryWorkQueues({
      logger: options.logger,
      ...(selection.broker ? { broker: selection.broker } : {}),
    });
    return {
      plane,
      queues,
      close: async () => {
        await plane.close();
        await queues.close();
      },
    };
  }
  // Loaded only in cluster mode. One NATS connection carries both events and queues.
  const [{ connectNats, drainNats }, { NatsEventPlane }, { NatsWorkQueues }] = await Promise.all([
    import("./event-plane/nats-connection.js"),
    import("./event-plane/nats-event-plane.js"),
    import("./work-queue/nats-work-queue.js"),
  ]);
  const connection = await connectNats({
    url: selection.url,
    ...options.nats,
    name: "tdist-events",
    logger: options.logger,
    connectTimeoutMs: options.startupTimeoutMs,
    signal,
  });
  const plane = NatsEventPlane.fromConnection(connection.connection, { logger: options.logger });
  const queues = NatsWorkQueues.fromConnection(connection.connection, { logger: options.logger });
  return {
    plane,
    queues,
    close: async () => {
      await plane.close();
      await queues.close();
      await drainNats(connection.connection);
    },
  };
}

/**
 * `createSignal` cancels the runtime's own plane while `create` waits for it;
 * `closingSignal` the other plane, connected on first use, at shutdown.
 */
async function openRequestPlaneClient(
  options: ResolvedRuntimeOptions,
  createSignal: AbortSignal | undefined,
  closingSignal: AbortSignal,
): Promise<RequestPlaneClient> {
  const connect = async (kind: "tcp" | "nats", signal: AbortSignal | undefined): Promise<RequestPlaneClient> => {
    if (kind === "nats") {
      // Loaded only when NATS is used: embedded runtimes never load the NATS client.
      const { NatsRequestClient } = await import("./request-plane/nats-request-client.js");
      return NatsRequestClient.connect({
        url: options.requestPlane.kind === "nats" ? options.requestPlane.url : options.natsUrl,
        ...options.nats,
        maxFrameBytes: options.maxFrameBytes,
        // Reaching the NATS server is a wait for a dependency, not a connection to a peer.
        connectTimeoutMs: options.startupTimeoutMs,
        signal,
        streamWindow: options.streamWindow,
        codec: options.codec,
        logger: options.logger,
      });
    }
    return new TcpRequestClient({
      maxFrameBytes: options.maxFrameBytes,
      connectTimeoutMs: options.connectTimeoutMs,
      heartbeatMs: options.tcpHeartbeatMs,
      streamWindow: options.streamWindow,
      codec: options.codec,
      logger: options.logger,
      tls: options.tcpTls,
    });
  };
  // The runtime's own plane connects now (a bad NATS URL fails `create`); the other on first use.
  return new TransportRouter(await connect(options.requestPlane.kind, createSignal), (kind) =>
    connect(kind, closingSignal),
  );
}
