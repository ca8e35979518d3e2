import { declaredEnvVars, declareEnvVars } from "./env-registry.js";
import { type EnvVar, enumVar, integerVar, listVar, stringVar } from "./env-var.js";

/**
 * Every `TDIST_*` environment variable, declared once. The CLI and the runtime
 * read configuration only through these declarations; `tdist env` prints them.
 */
export const Env = declareEnvVars("@tdist/runtime", {
  namespace: stringVar("TDIST_NAMESPACE", "tdist", "Namespace that components register under."),
  discovery: enumVar("TDIST_DISCOVERY", ["memory", "etcd"], "memory", "Discovery backend."),
  etcdEndpoints: listVar("TDIST_ETCD_ENDPOINTS", ["http://127.0.0.1:2379"], "etcd client URLs."),
  leaseTtlMs: integerVar("TDIST_LEASE_TTL_MS", 10_000, "Primary lease TTL in ms; keep-alive runs at TTL/3.", {
    min: 1_000,
  }),
  natsUrl: stringVar(
    "TDIST_NATS_URL",
    "nats://127.0.0.1:4222",
    "NATS server URL (event plane, queues, NATS request plane).",
  ),
  // etcd and NATS credentials and TLS. A secret has a *_FILE twin naming a file that holds it (a mounted
  // Kubernetes secret); giving both is an error. TLS files are PEM.
  etcdUsername: stringVar("TDIST_ETCD_USERNAME", "", "etcd user (etcd auth enabled); needs a password."),
  etcdPassword: stringVar("TDIST_ETCD_PASSWORD", "", "Password of TDIST_ETCD_USERNAME."),
  etcdPasswordFile: stringVar(
    "TDIST_ETCD_PASSWORD_FILE",
    "",
    "File holding the etcd password (one trailing newline ignored), instead of TDIST_ETCD_PASSWORD.",
  ),
  etcdTlsCa: stringVar(
    "TDIST_ETCD_TLS_CA",
    "",
    "CA certificate that etcd's certificate must chain to; endpoints must be https://. Default: the system's CAs.",
  ),
  etcdTlsCert: stringVar(
    "TDIST_ETCD_TLS_CERT",
    "",
    "Client certificate for etcd (--client-cert-auth); with TDIST_ETCD_TLS_KEY.",
  ),
  etcdTlsKey: stringVar("TDIST_ETCD_TLS_KEY", "", "Private key of TDIST_ETCD_TLS_CERT."),
  natsToken: stringVar("TDIST_NATS_TOKEN", "", "NATS token (nats-server --auth)."),
  natsTokenFile: stringVar("TDIST_NATS_TOKEN_FILE", "", "File holding the NATS token, instead of TDIST_NATS_TOKEN."),
  natsUser: stringVar("TDIST_NATS_USER", "", "NATS user (nats-server --user); needs a password."),
  natsPassword: stringVar("TDIST_NATS_PASSWORD", "", "Password of TDIST_NATS_USER."),
  natsPasswordFile: stringVar(
    "TDIST_NATS_PASSWORD_FILE",
    "",
    "File holding the NATS password, instead of TDIST_NATS_PASSWORD.",
  ),
  natsCreds: stringVar(
    "TDIST_NATS_CREDS",
    "",
    "NATS credentials file (.creds: user JWT and nkey seed) for decentralised JWT auth.",
  ),
  natsTlsCa: stringVar(
    "TDIST_NATS_TLS_CA",
    "",
    "CA certificate that nats-server's certificate must chain to; setting any TDIST_NATS_TLS_* requires TLS.",
  ),
  natsTlsCert: stringVar(
    "TDIST_NATS_TLS_CERT",
    "",
    "Client certificate for nats-server (--tlsverify); with TDIST_NATS_TLS_KEY.",
  ),
  natsTlsKey: stringVar("TDIST_NATS_TLS_KEY", "", "Private key of TDIST_NATS_TLS_CERT."),
  requestPlane: enumVar("TDIST_REQUEST_PLANE", ["tcp", "nats"], "tcp", "Request plane used across processes."),
  eventPlane: enumVar("TDIST_EVENT_PLANE", ["memory", "nats"], "memory", "Event plane and work queue backend."),
  tcpHost: stringVar("TDIST_TCP_HOST", "127.0.0.1", "Host the TCP request plane listens on."),
  tcpAdvertiseHost: stringVar(
    "TDIST_TCP_ADVERTISE_HOST",
    "",
    "Host other processes use to reach this one; defaults to TDIST_TCP_HOST (or the hostname when it is 0.0.0.0).",
  ),
  tcpPort: integerVar("TDIST_TCP_PORT", 0, "TCP request plane port; 0 picks a free one.", { min: 0, max: 65_535 }),
  // TCP request plane and KV transfer TLS: all three or none; PEM files.
  tcpTlsCert: stringVar(
    "TDIST_TCP_TLS_CERT",
    "",
    "This process's certificate for mutual TLS on the TCP request plane and KV transfer listener, signed by " +
      "TDIST_TCP_TLS_CA; it must name the advertised host (DNS name or IP SAN). Needs TDIST_TCP_TLS_KEY and TDIST_TCP_TLS_CA.",
  ),
  tcpTlsKey: stringVar("TDIST_TCP_TLS_KEY", "", "Private key (PEM, unencrypted) of TDIST_TCP_TLS_CERT."),
  tcpTlsCa: stringVar(
    "TDIST_TCP_TLS_CA",
    "",
    "CA certificate every peer's TCP TLS certificate must chain to; peers without one are refused (cannot_connect).",
  ),
  kvTransfer: enumVar(
    "TDIST_KV_TRANSFER",
    ["tcp", "local"],
    "tcp",
    "KV transfer backend: tcp (a listener of its own, opened on the first offer) or local (one process only).",
  ),
  kvTransferHost: stringVar(
    "TDIST_KV_TRANSFER_HOST",
    "",
    "Host the KV transfer listener binds; defaults to the TCP request plane's host (TDIST_TCP_HOST).",
  ),
  kvTransferAdvertiseHost: stringVar(
    "TDIST_KV_TRANSFER_ADVERTISE_HOST",
    "",
    "Host other processes use to fetch KV transfers from this one; defaults to TDIST_TCP_ADVERTISE_HOST.",
  ),
  kvTransferPort: integerVar("TDIST_KV_TRANSFER_PORT", 0, "KV transfer listener port; 0 picks a free one.", {
    min: 0,
    max: 65_535,
  }),
  kvTransferTtlMs: integerVar(
    "TDIST_KV_TRANSFER_TTL_MS",
    60_000,
    "How long a KV transfer offer waits for its fetch before it is released.",
    { min: 1 },
  ),
  kvTransferTimeoutMs: integerVar(
    "TDIST_KV_TRANSFER_TIMEOUT_MS",
    60_000,
    "Default deadline of one KV transfer fetch, connect to last byte.",
    { min: 1 },
  ),
  maxFrameBytes: integerVar("TDIST_MAX_FRAME_BYTES", 16 * 1024 * 1024, "Largest request-plane frame accepted.", {
    min: 1024,
    max: 1024 * 1024 * 1024,
  }),
  streamWindow: integerVar(
    "TDIST_STREAM_WINDOW",
    1024,
    "Responses a stream may have in flight before the handler is paused (credit window).",
    { min: 1, max: 1_000_000 },
  ),
  tcpHeartbeatMs: integerVar(
    "TDIST_TCP_HEARTBEAT_MS",
    1_000,
    "While a TCP request-plane connection has open streams the caller sends a PING this often and drops the " +
      "connection (its streams fail with disconnected) after 5 intervals without a frame from the server; 0 disables.",
    { min: 0 },
  ),
  connectTimeoutMs: integerVar("TDIST_CONNECT_TIMEOUT_MS", 5_000, "Timeout for opening a request-plane connection.", {
    min: 1,
  }),
  startupTimeoutMs: integerVar(
    "TDIST_STARTUP_TIMEOUT_MS",
    30_000,
    "How long a runtime keeps retrying etcd and NATS when it first connects to them (servers started " +
      "before their dependencies wait, logging at warn) before failing with dependency_unavailable.",
    { min: 1 },
  ),
  inhibitMs: integerVar(
    "TDIST_INHIBIT_MS",
    5_000,
    "How long an instance that failed a request (could not be reached, dropped a stream, is draining) stays out " +
      "of routing, unless discovery drops or re-announces it first.",
    { min: 0 },
  ),
  shutdownGraceMs: integerVar(
    "TDIST_SHUTDOWN_GRACE_MS",
    10_000,
    "How long shutdown waits for in-flight streams before killing them.",
    { min: 0 },
  ),
  httpPort: integerVar("TDIST_HTTP_PORT", 8000, "Port of the HTTP frontend.", { min: 0, max: 65_535 }),
  cacheDir: stringVar(
    "TDIST_CACHE_DIR",
    "",
    "Directory for generated files such as the built-in tiny model; defaults to ~/.cache/tdist.",
  ),
  logLevel: enumVar("TDIST_LOG_LEVEL", ["trace", "debug", "info", "warn", "error", "silent"], "info", "Log level."),
} as const satisfies Record<string, EnvVar<unknown>>);

/** Every declared variable, the runtime's and those other packages declare, for documentation. */
export function allEnvVars(): EnvVar<unknown>[] {
  return declaredEnvVars().map((entry) => entry.variable);
}
