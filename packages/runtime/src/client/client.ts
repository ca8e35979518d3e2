import { Context } from "../context.js";
import type { Discovery, PrefixWatch } from "../discovery/discovery.js";
import type { ErrorCategory } from "../errors/error-codes.js";
import { TdistError } from "../errors/tdist-error.js";
import type { ResponseStream } from "../handler.js";
import type { Logger } from "../logger.js";
import { LocalResponseStream } from "../request-plane/local-response-stream.js";
import type { RequestPlaneClient, ServedHandler, TransportAddress } from "../request-plane/request-plane.js";
import { delay, withTimeout } from "../util/abort.js";
import { FailedResponseStream } from "./failed-response-stream.js";
import { type Instance, instanceKeyPrefix, readInstanceRecord } from "./instance.js";
import type { Route } from "./route.js";
import { RoutedResponseStream } from "./routed-response-stream.js";
import { NO_EXCLUSIONS, type PickContext, type RouterMode, type RouterPolicy, routerForMode } from "./router-policy.js";

export interface ClientOptions {
  /** Default routing for `generate`; round-robin unless given. */
  router?: RouterPolicy | RouterMode;
  /**
   * How long an instance that failed a request (cannot be reached, dropped
   * its stream or connection, timed out, is draining) stays out of routing,
   * unless discovery drops or re-announces it first. Default 5000; runtimes
   * pass `TDIST_INHIBIT_MS`.
   */
  inhibitMs?: number;
  /**
   * Called once per malformed instance record the watch skips (after its
   * warning), so a process that keeps metrics can count them; the runtime
   * itself has no metrics registry.
   */
  onMalformedRecord?: (key: string, problem: string) => void;
}

export interface GenerateOptions {
  router?: RouterPolicy | RouterMode;
  /** Instance ids this request must not go to (say, ones that already failed it): routing never sees them. */
  exclude?: Iterable<string>;
  /** Aborting kills the request. */
  signal?: AbortSignal;
  /** The handler context this request is made from: cancelling it cancels this request. */
  context?: Context;
  requestId?: string;
  annotations?: Record<string, string>;
  /** Kill the request with a `timeout` error after this long. */
  timeoutMs?: number;
}

export interface WaitForInstancesOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** How many instances to wait for (default 1). */
  count?: number;
}

/** What a client needs from its runtime. */
export interface ClientHost {
  readonly discovery: Discovery;
  readonly requestPlane: RequestPlaneClient;
  readonly logger: Logger;
  /** The runtime's own instance id, when it serves anything. */
  readonly instanceId: string | undefined;
  /** A handler this runtime serves locally at `path`, if any (the local plane). */
  localHandler(path: string): ServedHandler | undefined;
}

/**
 * A client of one endpoint: a live view of its instances (from a discovery
 * watch) and `generate`, which routes a request and returns its stream.
 *
 * ```ts
 * const client = await runtime.namespace("tdist").component("backend").endpoint("generate").client();
 * await client.waitForInstances({ timeoutMs: 5000 });
 * for await (const chunk of client.generate({ text: "hello world" })) console.log(chunk);
 * ```
 */
export class Client<Req = unknown, Resp = unknown> {
  private readonly byId = new Map<string, Instance>();
  private sorted: Instance[] = [];
  private readonly downUntil = new Map<string, number>();
  private readonly inFlightCounts = new Map<string, number>();
  private readonly changeWaiters = new Set<() => void>();
  private readonly defaultRouter: RouterPolicy;
  private readonly inhibitMs: number;
  private readonly onMalformedRecord: ((key: string, problem: string) => void) | undefined;
  private malformed = 0;
  private readonly closeController = new AbortController();
  private readonly unsubscribeDisconnect: () => void;
  private watchLoop: Promise<void> | undefined;
  private readonly inFlightOf = (instanceId: string): number => this.inFlightCounts.get(instanceId) ?? 0;

  private constructor(
    private readonly host: ClientHost,
    readonly namespace: string,
    readonly component: string,
    readonly endpoint: string,
    options: ClientOptions,
  ) {
    this.defaultRouter = resolveRouter(options.router ?? "round-robin");
    this.inhibitMs = options.inhibitMs ?? DEFAULT_INHIBIT_MS;
    this.onMalformedRecord = options.onMalformedRecord;
    this.unsubscribeDisconnect = host.requestPlane.onDisconnect((address) => this.inhibitAddress(address));
  }

  /** @internal Use `endpoint.client()`. */
  static async create<Req, Resp>(
    host: ClientHost,
    namespace: string,
    component: string,
    endpoint: string,
    options: ClientOptions = {},
  ): Promise<Client<Req, Resp>> {
    const client = new Client<Req, Resp>(host, namespace, component, endpoint, options);
    const watch = await host.discovery.watchPrefix(client.prefix, { signal: client.closeController.signal });
    client.applySnapshot(watch);
    client.watchLoop = client.follow(watch);
    return client;
  }

  get path(): string {
    return `${this.namespace}/${this.component}/${this.endpoint}`;
  }

  private get prefix(): string {
    return instanceKeyPrefix(this.namespace, this.component, this.endpoint);
  }

  /** Live instances, sorted by id, excluding inhibited ones (see {@link inhibit}). */
  instances(): Instance[] {
    if (this.downUntil.size === 0) return this.sorted;
    const now = Date.now();
    for (const [id, until] of this.downUntil) if (until <= now) this.downUntil.delete(id);
    return this.sorted.filter((instance) => !this.downUntil.has(instance.instanceId));
  }

  /** Malformed instance records the watch has skipped so far. */
  get malformedRecords(): number {
    return this.malformed;
  }

  /**
   * Keeps `instanceId` out of routing for the client's `inhibitMs` (or until
   * discovery drops or re-announces it). `generate` does this itself when a
   * stream fails for a reason that says the instance is unwell; callers do
   * it for failures only they can read (an engine reporting its own crash).
   */
  inhibit(instanceId: string): void {
    if (this.inhibitMs === 0 || !this.byId.has(instanceId)) return;
    this.downUntil.set(instanceId, Date.now() + this.inhibitMs);
    this.notify();
  }

  /** Streams this client has open per instance. */
  inFlight(instanceId: string): number {
    return this.inFlightOf(instanceId);
  }

  /** Resolves with the instances once at least `count` are live. */
  async waitForInstances(options: WaitForInstancesOptions = {}): Promise<Instance[]> {
    const count = options.count ?? 1;
    const ready = (): boolean => this.instances().length >= count;
    if (ready()) return this.instances();
    return withTimeout(
      `waiting for ${count} instance(s) of ${this.path}`,
      options.timeoutMs,
      options.signal,
      (signal) => {
        return new Promise<Instance[]>((resolve, reject) => {
          const check = (): void => {
            if (!ready()) return;
            cleanup();
            resolve(this.instances());
          };
          const onAbort = (): void => {
            cleanup();
            reject(TdistError.wrap(signal.reason, "cancelled"));
          };
          const cleanup = (): void => {
            this.changeWaiters.delete(check);
            signal.removeEventListener("abort", onAbort);
          };
          this.changeWaiters.add(check);
          signal.addEventListener("abort", onAbort, { once: true });
          check();
        });
      },
    );
  }

  /**
   * Routes `request` to an instance and returns its response stream. Never
   * throws: routing and connection failures surface from the stream's first
   * `next()` as typed errors (`no_instances`, `instance_not_found`,
   * `cannot_connect`, ...). The stream carries the policy's route
   * (`stream.route`), whose `onFirstResponse` and `release` this drives.
   */
  generate(request: Req, options: GenerateOptions = {}): ResponseStream<Resp> {
    const context = new Context({
      ...(options.requestId === undefined ? {} : { requestId: options.requestId }),
      ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
      ...(options.context === undefined ? {} : { parent: options.context }),
    });
    const unlinkSignal = context.killOn(options.signal);
    let timer: NodeJS.Timeout | undefined;
    if (options.timeoutMs !== undefined) {
      const timeoutMs = options.timeoutMs;
      timer = setTimeout(
        () => context.kill(new TdistError("timeout", `request to ${this.path} timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
    }
    const cleanup = (): void => {
      unlinkSignal();
      if (timer) clearTimeout(timer);
    };
    let route: Route | undefined;
    try {
      const policy = options.router === undefined ? this.defaultRouter : resolveRouter(options.router);
      const exclude = options.exclude === undefined ? NO_EXCLUSIONS : new Set(options.exclude);
      const candidates = this.instances();
      const pickContext: PickContext = { inFlight: this.inFlightOf, request, exclude };
      route = policy.pick(
        exclude.size === 0 ? candidates : candidates.filter((instance) => !exclude.has(instance.instanceId)),
        pickContext,
      );
      if (route === undefined) throw new TdistError("no_instances", `no live instances of ${this.path}`);
    } catch (err) {
      cleanup();
      context.dispose();
      return new FailedResponseStream<Resp>(context.requestId, TdistError.wrap(err, "internal", "router failed"));
    }
    const instance = route.instance;
    const instanceId = instance.instanceId;
    this.inFlightCounts.set(instanceId, this.inFlightOf(instanceId) + 1);
    const routed = new RoutedResponseStream<Resp>(
      route,
      (outcome) => {
        cleanup();
        const remaining = this.inFlightOf(instanceId) - 1;
        if (remaining > 0) this.inFlightCounts.set(instanceId, remaining);
        else this.inFlightCounts.delete(instanceId);
        if (outcome.status === "failed" && INHIBITING.has(outcome.error.category)) this.inhibit(instanceId);
      },
      this.host.logger,
    );
    const local = instanceId === this.host.instanceId ? this.host.localHandler(this.path) : undefined;
    if (local) return routed.attach(new LocalResponseStream<Resp>(instanceId, local, request, context, routed));
    try {
      return routed.attach(
        this.host.requestPlane.open<Resp>(instance.transport, request, {
          path: this.path,
          instanceId,
          context,
          onFirstResponse: routed.onFirstResponse,
          onSettled: routed.onSettled,
          ...(options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs }),
        }),
      );
    } catch (err) {
      const error = TdistError.wrap(err, "internal");
      routed.onSettled({ status: "failed", error });
      context.dispose();
      return routed.attach(new FailedResponseStream<Resp>(context.requestId, error, instanceId));
    }
  }

  /** Stops watching discovery. Streams already open continue. */
  async close(): Promise<void> {
    if (this.closeController.signal.aborted) return;
    this.closeController.abort();
    this.unsubscribeDisconnect();
    await this.watchLoop;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private applySnapshot(watch: PrefixWatch): void {
    this.byId.clear();
    for (const { key, value } of watch.initial) this.applyPut(key, value, false);
    this.rebuild();
  }

  private async follow(initialWatch: PrefixWatch): Promise<void> {
    let watch = initialWatch;
    const signal = this.closeController.signal;
    for (;;) {
      try {
        for await (const event of watch) {
          if (event.type === "put") this.applyPut(event.key, event.value, true);
          else this.applyDelete(event.key);
        }
      } catch (err) {
        if (signal.aborted) return;
        this.host.logger.warn({ err, endpoint: this.path }, "instance watch failed; re-watching");
      }
      if (signal.aborted) return;
      try {
        await delay(500, signal);
        watch = await this.host.discovery.watchPrefix(this.prefix, { signal });
        this.applySnapshot(watch);
      } catch (err) {
        if (signal.aborted) return;
        this.host.logger.warn({ err, endpoint: this.path }, "cannot re-watch instances; retrying");
      }
    }
  }

  private applyPut(key: string, value: string, rebuild: boolean): void {
    const id = key.slice(this.prefix.length);
    const reading = INSTANCE_ID.test(id) ? readInstanceRecord(value) : { problem: "instance id in the key" };
    if ("problem" in reading) {
      // The previous record under the key, if any, stays: a garbled write is no reason to drop a live instance.
      this.malformed++;
      this.host.logger.warn(
        { key: key.slice(0, MAX_LOGGED_KEY), endpoint: this.path, problem: reading.problem },
        "ignoring malformed instance record",
      );
      try {
        this.onMalformedRecord?.(key, reading.problem);
      } catch (err) {
        this.host.logger.warn({ err, endpoint: this.path }, "onMalformedRecord callback failed");
      }
      return;
    }
    const record = reading.record;
    this.downUntil.delete(id);
    const previous = this.byId.get(id);
    this.byId.set(id, {
      instanceId: id,
      namespace: this.namespace,
      component: this.component,
      endpoint: this.endpoint,
      transport: record.transport,
      metadata: record.metadata,
      registeredAt: previous?.registeredAt ?? record.registeredAt,
    });
    if (rebuild) this.rebuild();
  }

  private applyDelete(key: string): void {
    const id = key.slice(this.prefix.length);
    this.downUntil.delete(id);
    if (this.byId.delete(id)) this.rebuild();
  }

  private inhibitAddress(address: TransportAddress): void {
    if (this.inhibitMs === 0) return;
    const until = Date.now() + this.inhibitMs;
    let changed = false;
    for (const instance of this.sorted) {
      if (sameAddress(instance.transport, address)) {
        this.downUntil.set(instance.instanceId, until);
        changed = true;
      }
    }
    if (changed) this.notify();
  }

  private rebuild(): void {
    this.sorted = [...this.byId.values()].sort((a, b) =>
      a.instanceId.length !== b.instanceId.length
        ? a.instanceId.length - b.instanceId.length
        : a.instanceId < b.instanceId
          ? -1
          : 1,
    );
    this.notify();
  }

  private notify(): void {
    for (const waiter of [...this.changeWaiters]) waiter();
  }
}

/** Instance ids are lease ids in hex; anything else under the prefix was not written by a runtime. */
const INSTANCE_ID = /^[0-9a-f]{1,16}$/;
const MAX_LOGGED_KEY = 256;

const DEFAULT_INHIBIT_MS = 5_000;

/**
 * Failures that say the instance, not the request, is the problem: the next
 * request should go elsewhere. A caller's cancellation and a handler's
 * verdict on the request do not count.
 */
const INHIBITING: ReadonlySet<ErrorCategory> = new Set(["cannot_connect", "disconnected", "timeout", "shutting_down"]);

function resolveRouter(router: RouterPolicy | RouterMode): RouterPolicy {
  return typeof router === "string" ? routerForMode(router) : router;
}

function sameAddress(a: TransportAddress, b: TransportAddress): boolean {
  if ("tcp" in a && "tcp" in b) return a.tcp === b.tcp;
  if ("nats" in a && "nats" in b) return a.nats === b.nats;
  return false;
}
