import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port.js";
import type { ManagedProcess } from "./managed-process.js";
import type { NatsJwtSetup } from "./nats-credentials.js";
import { isAddressInUse, type ServerHandle, ServerProcess, serverHandle } from "./server-process.js";

export interface NatsServerOptions {
  /** Executable name or path. Default `nats-server` (Debian package `nats-server`). */
  binary?: string;
  /** Enable JetStream (`-js`) with its store in the temporary directory. Default true. */
  jetstream?: boolean;
  /** How long to wait for "Server is ready" and a TCP connect. Default 20 000 ms. */
  startTimeoutMs?: number;
  /** How long `stop()`/`restart()` wait after SIGTERM before SIGKILL. Default 10 000 ms. */
  stopTimeoutMs?: number;
  /** Extra command-line flags appended to the defaults. */
  extraArgs?: readonly string[];
  /**
   * Port to listen on, e.g. one a client already waits on. Default: a free
   * port (retried if another process takes it first; a given port is not).
   */
  port?: number;
  /** Require a user and password (`--user`/`--pass`) or a token (`--auth`). Default: no auth. */
  auth?: { user: string; password: string } | { token: string };
  /**
   * Decentralised JWT auth: trust this operator and its preloaded account;
   * clients connect with the setup's `.creds` file. Excludes `auth`.
   */
  jwt?: NatsJwtSetup;
  /** Require TLS with these PEM files (`--tls`); `verify` also requires a client certificate signed by `caFile`. */
  tls?: NatsServerTlsOptions;
}

export interface NatsServerTlsOptions {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** `--tlsverify`: refuse clients without a certificate signed by `caFile`. Default false. */
  verify?: boolean;
}

export interface NatsRestartOptions {
  /** Start from an empty JetStream store, as if the server lost its disk. Default false. */
  wipeData?: boolean;
}

/**
 * A real nats-server with JetStream on a free loopback port and a temporary
 * store directory. Stop it (or `await using` it) when done; it is killed
 * anyway when the test process exits or dies.
 *
 * ```ts
 * await using nats = await startNats();
 * const nc = await connect({ servers: nats.url });
 * ```
 */
export interface NatsServer extends ServerHandle {
  /** Client URL, `nats://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** JetStream store directory (`-sd`). */
  readonly storeDir: string;
  restart(options?: NatsRestartOptions): Promise<void>;
}

const startAttempts = 3;

/** Starts nats-server and resolves once it logged "Server is ready" and accepts TCP connections. */
export async function startNats(options: NatsServerOptions = {}): Promise<NatsServer> {
  for (let attempt = 1; ; attempt++) {
    const port = options.port ?? (await freePort());
    const storeDir = await mkdtemp(join(tmpdir(), "tdist-nats-"));
    let server: ServerProcess;
    try {
      // The store directory is kept across restarts and removed by stop(): the config file lives there too.
      if (options.jwt) await writeFile(join(storeDir, "jwt-auth.conf"), options.jwt.serverConfig);
      server = new ServerProcess({
        name: "nats-server",
        binary: options.binary ?? "nats-server",
        debianPackage: "nats-server",
        args: natsArgs(port, storeDir, options),
        dataDir: storeDir,
        startTimeoutMs: options.startTimeoutMs ?? 20_000,
        stopTimeoutMs: options.stopTimeoutMs ?? 10_000,
        isReady: (process) => isReady(process, port),
      });
      await server.start();
    } catch (err) {
      await rm(storeDir, { recursive: true, force: true });
      if (attempt < startAttempts && options.port === undefined && isAddressInUse(err)) continue;
      throw err;
    }
    return serverHandle(server, { url: `nats://127.0.0.1:${port}`, port, storeDir });
  }
}

function natsArgs(port: number, storeDir: string, options: NatsServerOptions): string[] {
  const args = ["-a", "127.0.0.1", "-p", String(port), "-n", `testkit-${port}`];
  if (options.jwt) args.push("-c", join(storeDir, "jwt-auth.conf"));
  if (options.jetstream ?? true) args.push("-js", "-sd", storeDir);
  const auth = options.auth;
  if (auth && "token" in auth) args.push("--auth", auth.token);
  else if (auth) args.push("--user", auth.user, "--pass", auth.password);
  const tls = options.tls;
  if (tls) {
    args.push("--tls", "--tlscert", tls.certFile, "--tlskey", tls.keyFile, "--tlscacert", tls.caFile);
    if (tls.verify) args.push("--tlsverify");
  }
  return [...args, ...(options.extraArgs ?? [])];
}

async function isReady(process: ManagedProcess, port: number): Promise<boolean> {
  if (!process.output.includes("Server is ready")) return false;
  return canConnect(port, 1_000);
}

function canConnect(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    const finish = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
  });
}
