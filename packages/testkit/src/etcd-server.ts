import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port.js";
import { isAddressInUse, type ServerHandle, ServerProcess, serverHandle } from "./server-process.js";

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
  /** Client URL, `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  restart(options?: EtcdRestartOptions): Promise<void>;
}

const startAttempts = 3;

/** Starts etcd and resolves once `GET /health` reports `{"health":"true"}`. */
export async function startEtcd(options: EtcdServerOptions = {}): Promise<EtcdServer> {
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
        args: etcdArgs(clientPort, peerPort, dataDir, options.extraArgs ?? []),
        env: withoutEtcdVariables(process.env),
        dataDir,
        startTimeoutMs: options.startTimeoutMs ?? 20_000,
        stopTimeoutMs: options.stopTimeoutMs ?? 10_000,
        isReady: () => isHealthy(clientPort),
      });
      await server.start();
    } catch (err) {
      await rm(dataDir, { recursive: true, force: true });
      if (attempt < startAttempts && options.clientPort === undefined && isAddressInUse(err)) continue;
      throw err;
    }
    return serverHandle(server, { endpoint: `http://127.0.0.1:${clientPort}`, clientPort, peerPort, dataDir });
  }
}

function etcdArgs(clientPort: number, peerPort: number, dataDir: string, extra: readonly string[]): string[] {
  const clientUrl = `http://127.0.0.1:${clientPort}`;
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
    ...extra,
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

async function isHealthy(clientPort: number): Promise<boolean> {
  const response = await fetch(`http://127.0.0.1:${clientPort}/health`, { signal: AbortSignal.timeout(1_000) });
  if (!response.ok) {
    await response.body?.cancel();
    return false;
  }
  const body = (await response.json()) as { health?: unknown };
  return body.health === "true";
}
