import { randomBytes } from "node:crypto";
import { readEnv } from "./config/env-var.js";
import { Env } from "./config/environment.js";
import { optionalEnv, readSecretEnv } from "./config/secret-env.js";
import type { Discovery } from "./discovery/discovery.js";
import type { EtcdAuthOptions, EtcdTlsOptions } from "./discovery/etcd-security.js";
import type { MemoryDiscoveryStore } from "./discovery/memory-discovery.js";
import { TdistError } from "./errors/tdist-error.js";
import type { MemoryEventBus } from "./event-plane/memory-event-plane.js";
import { type NatsAuthOptions, type NatsTlsOptions, splitNatsUrlCredentials } from "./event-plane/nats-security.js";
import { type Logger, silentLogger } from "./logger.js";
import { type Codec, jsonCodec } from "./request-plane/codec.js";
import type { TcpTls, TcpTlsOptions } from "./request-plane/tcp-tls.js";
import { resolveTcpTls } from "./request-plane/tcp-tls-options.js";
import type { MemoryWorkQueueBroker } from "./work-queue/memory-work-queue.js";

export type DiscoveryOptions =
  | { kind: "memory"; store?: MemoryDiscoveryStore }
  | {
      kind: "etcd";
      endpoints?: readonly string[];
      /** etcd user and password. Default: `TDIST_ETCD_USERNAME` and `TDIST_ETCD_PASSWORD` (or `_FILE`). */
      auth?: EtcdAuthOptions;
      /** TLS files. Default: `TDIST_ETCD_TLS_CA`, `TDIST_ETCD_TLS_CERT`, `TDIST_ETCD_TLS_KEY`. */
      tls?: EtcdTlsOptions;
    };

/**
 * How every NATS connection of the runtime (event plane, work queues, NATS
 * request plane) authenticates and encrypts. Credentials in the NATS URL
 * (`nats://user:password@host`) are used when `auth` is not given.
 */
export interface NatsSecurityOptions {
  /** Default: `TDIST_NATS_TOKEN`, `TDIST_NATS_USER`/`TDIST_NATS_PASSWORD` or `TDIST_NATS_CREDS` (secrets also as `_FILE`). */
  auth?: NatsAuthOptions;
  /** Default: `TDIST_NATS_TLS_CA`, `TDIST_NATS_TLS_CERT`, `TDIST_NATS_TLS_KEY` (any of them set requires TLS). */
  tls?: NatsTlsOptions;
}

export type RequestPlaneOptions =
  | { kind: "tcp"; host?: string; port?: number; advertiseHost?: string }
  | { kind: "nats"; url?: string };

export type EventPlaneSelection =
  | { kind: "memory"; bus?: MemoryEventBus; broker?: MemoryWorkQueueBroker }
  | { kind: "nats"; url?: string };

/**
 * The KV transfer plane's backend. `tcp` listens (on first offer) on `host`
 * (default `TDIST_KV_TRANSFER_HOST`, else the TCP request plane's host) and
 * `port` (default 0); `local` never listens, for runtimes that only meet in
 * one process.
 */
export type KvTransferOptions =
  | { kind?: "tcp"; host?: string; port?: number; advertiseHost?: string; ttlMs?: number; fetchTimeoutMs?: number }
  | { kind: "local"; ttlMs?: number; fetchTimeoutMs?: number };

export interface RuntimeOptions {
  /** A Discovery instance, or how to make one. Default: `TDIST_DISCOVERY` (memory). */
  discovery?: Discovery | DiscoveryOptions;
  /** Request plane across runtimes. Default: `TDIST_REQUEST_PLANE` (tcp). */
  requestPlane?: RequestPlaneOptions;
  /** Event plane and work queues backend. Default: `TDIST_EVENT_PLANE` (memory). */
  eventPlane?: EventPlaneSelection;
  /** KV transfer backend and defaults. Default: `TDIST_KV_TRANSFER` (tcp). */
  kvTransfer?: KvTransferOptions;
  /** Credentials and TLS for NATS. Default: from the `TDIST_NATS_*` variables. */
  nats?: NatsSecurityOptions;
  leaseTtlMs?: number;
  /** Responses in flight per stream before the handler pauses. */
  streamWindow?: number;
  maxFrameBytes?: number;
  /** Timeout for opening one request-plane connection to another runtime. Default: `TDIST_CONNECT_TIMEOUT_MS`. */
  connectTimeoutMs?: number;
  /**
   * PING interval of a TCP request-plane connection with open streams; 5
   * intervals without a frame from the server fail its streams with
   * `disconnected`. 0 disables. Default: `TDIST_TCP_HEARTBEAT_MS` (1000).
   */
  tcpHeartbeatMs?: number;
  /**
   * How long connecting to etcd and NATS is retried, with backoff and a warn
   * line per phase, before failing with `dependency_unavailable`: processes
   * started before their servers wait for them. Default: `TDIST_STARTUP_TIMEOUT_MS` (30 s).
   */
  startupTimeoutMs?: number;
  /** How long `shutdown()` lets in-flight streams finish before killing them. */
  shutdownGraceMs?: number;
  /** How long clients keep an instance that failed a request out of routing. Default: `TDIST_INHIBIT_MS` (5 s). */
  inhibitMs?: number;
  codec?: Codec;
  /**
   * Mutual TLS for the TCP request plane (client and server) and the KV
   * transfer listener: PEM files of this process's certificate and key and of
   * the cluster's CA. `false` turns it off. Default: `TDIST_TCP_TLS_CERT`,
   * `TDIST_TCP_TLS_KEY`, `TDIST_TCP_TLS_CA` (all three, or none for plaintext).
   */
  tcpTls?: TcpTlsOptions | false;
  /** The runtime logs through `logger.child({ runtime: name })`. */
  logger?: Logger;
  /**
   * Names this runtime in its log lines (`runtime` field), e.g. "frontend" or
   * "worker-1"; matters when several runtimes share a process or a log.
   * Default: `rt-` and 6 random hex digits.
   */
  name?: string;
  /** Cancels `create()` while it waits for etcd or NATS. */
  signal?: AbortSignal;
  /** Where defaults come from; `process.env` unless given (tests pass `{}`). */
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedRuntimeOptions {
  discovery:
    | Discovery
    | { kind: "memory"; store?: MemoryDiscoveryStore }
    | { kind: "etcd"; endpoints: readonly string[]; auth?: EtcdAuthOptions; tls?: EtcdTlsOptions };
  requestPlane: { kind: "tcp"; host: string; port: number; advertiseHost: string } | { kind: "nats"; url: string };
  eventPlane: { kind: "memory"; bus?: MemoryEventBus; broker?: MemoryWorkQueueBroker } | { kind: "nats"; url: string };
  kvTransfer: {
    backend: { kind: "tcp"; host: string; port: number; advertiseHost: string } | { kind: "local" };
    ttlMs: number;
    fetchTimeoutMs: number;
  };
  /** NATS URL for reaching NATS-plane instances when this runtime's own plane is TCP. */
  natsUrl: string;
  /** For every NATS connection; the URLs above carry no credentials (they moved here). */
  nats: NatsSecurityOptions;
  leaseTtlMs: number;
  streamWindow: number;
  maxFrameBytes: number;
  connectTimeoutMs: number;
  tcpHeartbeatMs: number;
  startupTimeoutMs: number;
  shutdownGraceMs: number;
  inhibitMs: number;
  codec: Codec;
  /** Loaded TCP TLS credentials, or undefined for plaintext. */
  tcpTls: TcpTls | undefined;
  name: string;
  /** Already the child logger carrying `{ runtime: name }`. */
  logger: Logger;
}

function positiveInteger(name: string, value: number, min = 1): number {
  if (!Number.isInteger(value) || value < min) {
    throw new TdistError("invalid_option", `option ${name} must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

/** Options → defaults (from the environment registry) → validation → a resolved object. */
export function resolveRuntimeOptions(options: RuntimeOptions = {}): ResolvedRuntimeOptions {
  const env = options.env ?? process.env;
  const name = runtimeName(options.name);
  let discovery: ResolvedRuntimeOptions["discovery"];
  const given = options.discovery;
  if (given !== undefined && "grantLease" in given) {
    discovery = given;
  } else {
    const kind = given?.kind ?? readEnv(Env.discovery, env);
    if (kind === "memory") {
      discovery = given?.kind === "memory" && given.store ? { kind, store: given.store } : { kind };
    } else if (kind === "etcd") {
      const endpoints = (given?.kind === "etcd" ? given.endpoints : undefined) ?? readEnv(Env.etcdEndpoints, env);
      if (endpoints.length === 0) throw new TdistError("invalid_option", "etcd discovery needs at least one endpoint");
      const etcd = given?.kind === "etcd" ? given : undefined;
      const auth = etcd?.auth ?? etcdAuthFromEnv(env);
      const tls = etcd?.tls ?? etcdTlsFromEnv(env);
      discovery = { kind, endpoints, ...(auth ? { auth } : {}), ...(tls ? { tls } : {}) };
    } else {
      throw new TdistError("invalid_option", `unknown discovery kind ${JSON.stringify(kind)}: use memory or etcd`);
    }
  }

  const planeKind = options.requestPlane?.kind ?? readEnv(Env.requestPlane, env);
  let requestPlane: ResolvedRuntimeOptions["requestPlane"];
  if (planeKind === "tcp") {
    const given = options.requestPlane?.kind === "tcp" ? options.requestPlane : undefined;
    requestPlane = {
      kind: "tcp",
      host: given?.host ?? readEnv(Env.tcpHost, env),
      port: given?.port ?? readEnv(Env.tcpPort, env),
      advertiseHost: given?.advertiseHost ?? readEnv(Env.tcpAdvertiseHost, env),
    };
    if (!Number.isInteger(requestPlane.port) || requestPlane.port < 0 || requestPlane.port > 65_535) {
      throw new TdistError("invalid_option", `option requestPlane.port must be 0-65535, got ${requestPlane.port}`);
    }
  } else if (planeKind === "nats") {
    const given = options.requestPlane?.kind === "nats" ? options.requestPlane : undefined;
    requestPlane = { kind: "nats", url: given?.url ?? readEnv(Env.natsUrl, env) };
  } else {
    throw new TdistError("invalid_option", `unknown request plane ${JSON.stringify(planeKind)}: use tcp or nats`);
  }

  const eventKind = options.eventPlane?.kind ?? readEnv(Env.eventPlane, env);
  let eventPlane: ResolvedRuntimeOptions["eventPlane"];
  if (eventKind === "memory") {
    eventPlane = options.eventPlane?.kind === "memory" ? options.eventPlane : { kind: "memory" };
  } else if (eventKind === "nats") {
    const given = options.eventPlane?.kind === "nats" ? options.eventPlane : undefined;
    eventPlane = { kind: "nats", url: given?.url ?? readEnv(Env.natsUrl, env) };
  } else {
    throw new TdistError("invalid_option", `unknown event plane ${JSON.stringify(eventKind)}: use memory or nats`);
  }

  const nats = resolveNats(
    options.nats,
    requestPlane,
    eventPlane,
    requestPlane.kind === "nats" ? requestPlane.url : readEnv(Env.natsUrl, env),
    env,
  );
  return {
    discovery,
    requestPlane: nats.requestPlane,
    eventPlane: nats.eventPlane,
    kvTransfer: resolveKvTransfer(options.kvTransfer, requestPlane, env),
    natsUrl: nats.natsUrl,
    nats: nats.security,
    leaseTtlMs: positiveInteger("leaseTtlMs", options.leaseTtlMs ?? readEnv(Env.leaseTtlMs, env), 1000),
    streamWindow: positiveInteger("streamWindow", options.streamWindow ?? readEnv(Env.streamWindow, env)),
    maxFrameBytes: positiveInteger("maxFrameBytes", options.maxFrameBytes ?? readEnv(Env.maxFrameBytes, env), 1024),
    connectTimeoutMs: positiveInteger(
      "connectTimeoutMs",
      options.connectTimeoutMs ?? readEnv(Env.connectTimeoutMs, env),
    ),
    tcpHeartbeatMs: positiveInteger("tcpHeartbeatMs", options.tcpHeartbeatMs ?? readEnv(Env.tcpHeartbeatMs, env), 0),
    shutdownGraceMs: positiveInteger(
      "shutdownGraceMs",
      options.shutdownGraceMs ?? readEnv(Env.shutdownGraceMs, env),
      0,
    ),
    inhibitMs: positiveInteger("inhibitMs", options.inhibitMs ?? readEnv(Env.inhibitMs, env), 0),
    startupTimeoutMs: positiveInteger(
      "startupTimeoutMs",
      options.startupTimeoutMs ?? readEnv(Env.startupTimeoutMs, env),
    ),
    codec: options.codec ?? jsonCodec,
    tcpTls: resolveTcpTls(options.tcpTls, env),
    name,
    logger: childLogger(options.logger ?? silentLogger, { runtime: name }),
  };
}

function etcdAuthFromEnv(env: NodeJS.ProcessEnv): EtcdAuthOptions | undefined {
  const username = optionalEnv(Env.etcdUsername, env);
  const password = readSecretEnv(Env.etcdPassword, Env.etcdPasswordFile, env);
  if (username === undefined && password === undefined) return undefined;
  if (username === undefined || password === undefined) {
    throw new TdistError(
      "invalid_option",
      `${Env.etcdUsername.name} and ${Env.etcdPassword.name} (or ${Env.etcdPasswordFile.name}) go together; one is unset`,
    );
  }
  return { username, password };
}

function etcdTlsFromEnv(env: NodeJS.ProcessEnv): EtcdTlsOptions | undefined {
  return tlsFiles(optionalEnv(Env.etcdTlsCa, env), optionalEnv(Env.etcdTlsCert, env), optionalEnv(Env.etcdTlsKey, env));
}

function tlsFiles(
  caFile: string | undefined,
  certFile: string | undefined,
  keyFile: string | undefined,
): { caFile?: string; certFile?: string; keyFile?: string } | undefined {
  if (caFile === undefined && certFile === undefined && keyFile === undefined) return undefined;
  return {
    ...(caFile === undefined ? {} : { caFile }),
    ...(certFile === undefined ? {} : { certFile }),
    ...(keyFile === undefined ? {} : { keyFile }),
  };
}

function natsAuthFromEnv(env: NodeJS.ProcessEnv): NatsAuthOptions | undefined {
  const token = readSecretEnv(Env.natsToken, Env.natsTokenFile, env);
  const user = optionalEnv(Env.natsUser, env);
  const password = readSecretEnv(Env.natsPassword, Env.natsPasswordFile, env);
  const credsFile = optionalEnv(Env.natsCreds, env);
  const auth: NatsAuthOptions = {
    ...(token === undefined ? {} : { token }),
    ...(user === undefined ? {} : { user }),
    ...(password === undefined ? {} : { password }),
    ...(credsFile === undefined ? {} : { credsFile }),
  };
  if (Object.keys(auth).length === 0) return undefined;
  if ((user === undefined) !== (password === undefined)) {
    throw new TdistError(
      "invalid_option",
      `${Env.natsUser.name} and ${Env.natsPassword.name} (or ${Env.natsPasswordFile.name}) go together; one is unset`,
    );
  }
  // More than one way (token and user, ...) is refused when connecting, naming the options.
  return auth;
}

/**
 * Takes credentials out of the NATS URLs (they would be logged) into the one
 * security setting all NATS connections share; credentials in a URL are
 * refused alongside credentials given otherwise.
 */
function resolveNats(
  given: NatsSecurityOptions | undefined,
  requestPlane: ResolvedRuntimeOptions["requestPlane"],
  eventPlane: ResolvedRuntimeOptions["eventPlane"],
  natsUrl: string,
  env: NodeJS.ProcessEnv,
): {
  requestPlane: ResolvedRuntimeOptions["requestPlane"];
  eventPlane: ResolvedRuntimeOptions["eventPlane"];
  natsUrl: string;
  security: NatsSecurityOptions;
} {
  const urls = [natsUrl, ...(requestPlane.kind === "nats" ? [requestPlane.url] : [])];
  if (eventPlane.kind === "nats") urls.push(eventPlane.url);
  const split = splitNatsUrlCredentials(urls);
  const fromUrl = Object.keys(split.auth).length > 0 ? split.auth : undefined;
  const explicit = given?.auth ?? natsAuthFromEnv(env);
  if (fromUrl && explicit) {
    throw new TdistError(
      "invalid_option",
      "the NATS URL carries credentials and NATS credentials are given too (options or TDIST_NATS_* variables); use one",
    );
  }
  const auth = explicit ?? fromUrl;
  const tls =
    given?.tls ??
    tlsFiles(optionalEnv(Env.natsTlsCa, env), optionalEnv(Env.natsTlsCert, env), optionalEnv(Env.natsTlsKey, env));
  const [cleanNatsUrl = natsUrl, ...rest] = split.urls;
  const cleanPlaneUrl = requestPlane.kind === "nats" ? rest.shift() : undefined;
  const cleanEventUrl = eventPlane.kind === "nats" ? rest.shift() : undefined;
  return {
    requestPlane:
      requestPlane.kind === "nats" ? { kind: "nats", url: cleanPlaneUrl ?? requestPlane.url } : requestPlane,
    eventPlane: eventPlane.kind === "nats" ? { kind: "nats", url: cleanEventUrl ?? eventPlane.url } : eventPlane,
    natsUrl: cleanNatsUrl,
    security: { ...(auth ? { auth } : {}), ...(tls ? { tls } : {}) },
  };
}

function resolveKvTransfer(
  given: KvTransferOptions | undefined,
  requestPlane: ResolvedRuntimeOptions["requestPlane"],
  env: NodeJS.ProcessEnv,
): ResolvedRuntimeOptions["kvTransfer"] {
  const kind = given?.kind ?? readEnv(Env.kvTransfer, env);
  const ttlMs = positiveInteger("kvTransfer.ttlMs", given?.ttlMs ?? readEnv(Env.kvTransferTtlMs, env));
  const fetchTimeoutMs = positiveInteger(
    "kvTransfer.fetchTimeoutMs",
    given?.fetchTimeoutMs ?? readEnv(Env.kvTransferTimeoutMs, env),
  );
  if (kind === "local") return { backend: { kind }, ttlMs, fetchTimeoutMs };
  if (kind !== "tcp") {
    throw new TdistError("invalid_option", `unknown KV transfer backend ${JSON.stringify(kind)}: use tcp or local`);
  }
  const tcp = given?.kind === "local" ? undefined : given;
  const planeTcp = requestPlane.kind === "tcp" ? requestPlane : undefined;
  const port = tcp?.port ?? readEnv(Env.kvTransferPort, env);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new TdistError("invalid_option", `option kvTransfer.port must be 0-65535, got ${port}`);
  }
  const host = tcp?.host || readEnv(Env.kvTransferHost, env) || planeTcp?.host || readEnv(Env.tcpHost, env);
  const advertiseHost =
    tcp?.advertiseHost ||
    readEnv(Env.kvTransferAdvertiseHost, env) ||
    planeTcp?.advertiseHost ||
    readEnv(Env.tcpAdvertiseHost, env);
  return { backend: { kind, host, port, advertiseHost }, ttlMs, fetchTimeoutMs };
}

const maxNameLength = 64;

function runtimeName(given: unknown): string {
  if (given === undefined) return `rt-${randomBytes(3).toString("hex")}`;
  if (typeof given !== "string" || given.trim() === "" || given.length > maxNameLength) {
    throw new TdistError(
      "invalid_option",
      `option name must be a non-blank string of at most ${maxNameLength} characters, got ${JSON.stringify(given)}`,
    );
  }
  return given;
}

/** A child logger; loggers written against an older interface without `child` get the bindings merged by hand. */
function childLogger(logger: Logger, bindings: object): Logger {
  if (typeof (logger as Partial<Logger>).child === "function") return logger.child(bindings);
  const merged = (method: "debug" | "info" | "warn" | "error") => (obj: object, msg?: string) =>
    logger[method]({ ...bindings, ...obj }, msg);
  return {
    debug: merged("debug"),
    info: merged("info"),
    warn: merged("warn"),
    error: merged("error"),
    child: (more) => childLogger(logger, { ...bindings, ...more }),
  };
}
