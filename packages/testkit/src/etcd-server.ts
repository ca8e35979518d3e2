import { mkdtemp, readFile, rm } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port.js";
import { isAddressInUse, type ServerHandle, ServerProcess, serverHandle } from "./server-process.js";
import { TestkitError } from "./testkit-error.js";

export interface EtcdServerOptions {
  /** Executable name or path. Default `etcd` (Debian package `etcd-server`). */
  binary?: string;
  /** How long to wait for `/health` to report healthy. Default 20 000 ms. */
  startTimeoutMs?: number;
  /** How long `stop()`/`restart()` wait after SIGTERM before SIGKILL. Default 10 000 ms. */
  stopTimeoutMs?: number;
  /** Extra command-line flags appended to the defaults. */
  extraArgs?: readonly string[];
  /**
   * Client port to listen on, e.g. one a runtime already waits on. Default: a
   * free port (retried if another process takes it first; a given port is not).
   */
  clientPort?: number;
  /**
   * Serve clients over TLS (`https://` endpoint) with these PEM files;
   * `clientCertAuth` also requires a client certificate signed by `caFile`.
   */
  tls?: EtcdServerTlsOptions;
  /**
   * Enable etcd auth with a `root` user (role `root`) holding this password,
   * before the server is handed out; calls without a user then fail.
   */
  rootPassword?: string;
}

export interface EtcdServerTlsOptions {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** `--client-cert-auth`: refuse clients without a certificate signed by `caFile`. Default false. */
  clientCertAuth?: boolean;
}

export interface EtcdRestartOptions {
  /** Start from an empty data directory, as if etcd lost its disk. Default false. */
  wipeData?: boolean;
}

/**
 * A real single-member etcd on free loopback ports with a temporary data
 * directory. Stop it (or `await using` it) when done; it is killed anyway
 * when the test process exits or dies.
 *
 * ```ts
 * await using etcd = await startEtcd();
 * const discovery = await EtcdDiscovery.connect({ endpoints: [etcd.endpoint] });
 * ```
 */
export interface EtcdServer extends ServerHandle {
  /** Client URL, `http://127.0.0.1:<port>` (`https://` with TLS). */
  readonly endpoint: string;
  /** The root user's name when auth is enabled (`rootPassword`). */
  readonly username: string | undefined;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  restart(options?: EtcdRestartOptions): Promise<void>;
}

const startAttempts = 3;

/** Starts etcd and resolves once `GET /health` reports `{"health":"true"}`. */
export async function startEtcd(options: EtcdServerOptions = {}): Promise<EtcdServer> {
  const tls = options.tls ? await loadProbeTls(options.tls) : undefined;
  for (let attempt = 1; ; attempt++) {
    const clientPort = options.clientPort ?? (await freePort());
    let peerPort = await freePort();
    while (peerPort === clientPort) peerPort = await freePort();
    const dataDir = await mkdtemp(join(tmpdir(), "tdist-etcd-"));
    let server: ServerProcess;
    try {
      server = new ServerProcess({
        name: "etcd",
        binary: options.binary ?? "etcd",
        debianPackage: "etcd-server",
        args: etcdArgs(clientPort, peerPort, dataDir, options),
        env: withoutEtcdVariables(process.env),
        dataDir,
        startTimeoutMs: options.startTimeoutMs ?? 20_000,
        stopTimeoutMs: options.stopTimeoutMs ?? 10_000,
        isReady: () => isHealthy(clientPort, tls),
      });
      await server.start();
    } catch (err) {
      await rm(dataDir, { recursive: true, force: true });
      if (attempt < startAttempts && options.clientPort === undefined && isAddressInUse(err)) continue;
      throw err;
    }
    try {
      if (options.rootPassword !== undefined) await enableAuth(clientPort, tls, options.rootPassword);
    } catch (err) {
      await server.stop();
      throw err;
    }
    const scheme = options.tls ? "https" : "http";
    return serverHandle(server, {
      endpoint: `${scheme}://127.0.0.1:${clientPort}`,
      username: options.rootPassword === undefined ? undefined : "root",
      clientPort,
      peerPort,
      dataDir,
    });
  }
}

function etcdArgs(clientPort: number, peerPort: number, dataDir: string, options: EtcdServerOptions): string[] {
  const clientUrl = `${options.tls ? "https" : "http"}://127.0.0.1:${clientPort}`;
  const tls = options.tls
    ? [
        `--cert-file=${options.tls.certFile}`,
        `--key-file=${options.tls.keyFile}`,
        `--trusted-ca-file=${options.tls.caFile}`,
        ...(options.tls.clientCertAuth ? ["--client-cert-auth"] : []),
      ]
    : [];
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  return [
    "--name=testkit",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=testkit=${peerUrl}`,
    "--initial-cluster-state=new",
    "--logger=zap",
    "--log-outputs=stderr",
    // A single member: short raft timings make startup and restarts fast and
    // let leases as short as 1 s be granted as asked (etcd's floor is 1.5 election timeouts).
    "--heartbeat-interval=50",
    "--election-timeout=500",
    ...tls,
    ...(options.extraArgs ?? []),
  ];
}

/** etcd reads its flags from ETCD_* variables too; a host's settings must not leak into tests. */
function withoutEtcdVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const clean: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("ETCD")) clean[name] = value;
  }
  return clean;
}

/** What the testkit's own HTTPS calls to etcd present: the CA, and the server's pair as a client certificate. */
interface ProbeTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

async function loadProbeTls(tls: EtcdServerTlsOptions): Promise<ProbeTls> {
  const [ca, cert, key] = await Promise.all([readFile(tls.caFile), readFile(tls.certFile), readFile(tls.keyFile)]);
  return { ca, cert, key };
}

/** One call to etcd's JSON gateway (`/health`, `/v3/...`), over HTTPS when `tls` is given. */
async function etcdHttp(
  clientPort: number,
  tls: ProbeTls | undefined,
  path: string,
  body?: object,
  token?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers.authorization = token;
  const init = { method: body === undefined ? "GET" : "POST", headers, signal: AbortSignal.timeout(2_000) };
  const payload = body === undefined ? undefined : JSON.stringify(body);
  if (tls === undefined) {
    const response = await fetch(`http://127.0.0.1:${clientPort}${path}`, { ...init, body: payload });
    const text = await response.text();
    return { status: response.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port: clientPort, path, ...init, ca: tls.ca, cert: tls.cert, key: tls.key },
      (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          text += chunk;
        });
        response.on("end", () => {
          try {
            resolve({ status: response.statusCode ?? 0, body: text ? JSON.parse(text) : {} });
          } catch (err) {
            reject(err);
          }
        });
        response.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

/** What `etcdctl user add root && etcdctl auth enable` does, through the JSON gateway. */
async function enableAuth(clientPort: number, tls: ProbeTls | undefined, rootPassword: string): Promise<void> {
  const steps: [string, object][] = [
    ["/v3/auth/role/add", { name: "root" }],
    ["/v3/auth/user/add", { name: "root", password: rootPassword }],
    ["/v3/auth/user/grant", { user: "root", role: "root" }],
    ["/v3/auth/enable", {}],
  ];
  for (const [path, body] of steps) {
    const response = await etcdHttp(clientPort, tls, path, body);
    if (response.status !== 200) {
      throw new TestkitError(
        "server_start_failed",
        `etcd refused ${path} while enabling auth: HTTP ${response.status} ${JSON.stringify(response.body)}`,
      );
    }
  }
}

async function isHealthy(clientPort: number, tls: ProbeTls | undefined): Promise<boolean> {
  const response = await etcdHttp(clientPort, tls, "/health");
  return response.status === 200 && response.body.health === "true";
}
