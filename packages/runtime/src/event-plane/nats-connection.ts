import {
  AuthorizationError,
  connect,
  InvalidArgumentError,
  type NatsConnection,
  UserAuthenticationExpiredError,
} from "@nats-io/transport-node";
import { TdistError } from "../errors/tdist-error.js";
import { type Logger, silentLogger } from "../logger.js";
import { causeText, waitForServer } from "../util/wait-for-server.js";
import { type NatsAuthOptions, type NatsTlsOptions, resolveNatsSecurity } from "./nats-security.js";
import { checkNatsTls } from "./nats-tls-check.js";

export interface NatsConnectOptions {
  /**
   * Server URL(s), e.g. `nats://127.0.0.1:4222`. `nats://user:password@host`
   * and `nats://token@host` work; the credentials are taken out before the
   * URL is logged or named in an error.
   */
  url: string | string[];
  /** Credentials: a token, a user and password, or a credentials file. Default: none. */
  auth?: NatsAuthOptions;
  /** TLS (PEM files); given, the connection must be TLS. Default: as the server asks. */
  tls?: NatsTlsOptions;
  /** Connection name shown by the server's monitoring. */
  name?: string;
  logger?: Logger;
  /** Wait between reconnect attempts (ms, jittered by the client). Default 1 000. */
  reconnectTimeWaitMs?: number;
  /**
   * How long the first connection keeps being tried, with backoff (the
   * server may start after this process), before failing with
   * `dependency_unavailable` (ms). Default 5 000.
   */
  connectTimeoutMs?: number;
  /** Cancels the wait for the first connection. */
  signal?: AbortSignal;
}

/** A NATS connection plus the monitor that logs its disconnects and reconnects. */
export interface MonitoredNatsConnection {
  readonly connection: NatsConnection;
  /** Settles once the connection is closed and its status monitor has stopped. */
  readonly monitorDone: Promise<void>;
}

function positiveInteger(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new TdistError("invalid_option", `${option} must be a positive integer (ms), got ${String(value)}`);
  }
  return value;
}

/**
 * Opens a NATS connection that reconnects forever (`maxReconnectAttempts: -1`),
 * so a restarted nats-server is picked up without restarting the process: the
 * client re-sends its subscriptions on reconnect and buffers publishes made
 * while disconnected (up to the client's reconnect buffer). The first
 * connection is retried until `connectTimeoutMs` (logging at warn while it
 * waits), then fails with `dependency_unavailable`; refused or missing
 * credentials fail at once with `unauthorized`, a certificate either side
 * refuses with `tls_failed`, bad options with `invalid_option` (unreadable
 * files included) or `event_plane_error`, an aborted `signal` with
 * `cancelled`. No message or log line carries a credential.
 */
export async function connectNats(options: NatsConnectOptions): Promise<MonitoredNatsConnection> {
  const given = Array.isArray(options.url) ? options.url : [options.url];
  if (given.length === 0 || given.some((u) => typeof u !== "string" || u.length === 0)) {
    throw new TdistError("invalid_option", "url must be a non-empty NATS server URL (or a list of them)");
  }
  const security = resolveNatsSecurity(given, options.auth, options.tls);
  const urls = security.servers;
  const reconnectTimeWait = positiveInteger("reconnectTimeWaitMs", options.reconnectTimeWaitMs, 1_000);
  const timeout = positiveInteger("connectTimeoutMs", options.connectTimeoutMs, 5_000);
  const logger = (options.logger ?? silentLogger).child({ nats: urls.join(",") });
  let connection: NatsConnection;
  try {
    connection = await waitForServer({
      server: "NATS",
      endpoints: urls,
      timeoutMs: timeout,
      signal: options.signal,
      logger,
      attempt: async (remainingMs) => {
        const tls = options.tls;
        if (tls !== undefined && urls[0] !== undefined) await checkNatsTls(urls[0], tls, Math.min(remainingMs, 2_000));
        return connect({
          servers: urls,
          ...security.connectOptions,
          ...(options.name === undefined ? {} : { name: options.name }),
          maxReconnectAttempts: -1,
          reconnectTimeWait,
          // The wait's own bound (remainingMs) goes first, so a late attempt reads as cut short.
          timeout: Math.round(remainingMs) + 250,
        });
      },
      isPermanent: (err) => isAuthFailure(err) || isTlsFailure(err) || err instanceof InvalidArgumentError,
      discard: (late) => {
        void late.close().catch(() => {});
      },
    });
  } catch (err) {
    const where = `NATS at ${urls.join(",")}`;
    if (isAuthFailure(err)) {
      throw new TdistError(
        "unauthorized",
        `${where}: authentication failed (${security.authKind === "none" ? "the server requires credentials; none were given" : `credentials of kind ${security.authKind} refused`}): ${causeText(err)}`,
        { cause: err },
      );
    }
    if (isTlsFailure(err)) {
      throw new TdistError("tls_failed", `${where}: TLS failed: ${causeText(err)}`, { cause: err });
    }
    throw TdistError.wrap(err, "event_plane_error", `cannot connect to ${where}`);
  }
  const monitorDone = (async () => {
    for await (const status of connection.status()) {
      switch (status.type) {
        case "disconnect":
          logger.warn({ server: status.server }, "NATS disconnected; reconnecting");
          break;
        case "reconnect":
          logger.info({ server: status.server }, "NATS reconnected");
          break;
        case "error":
          logger.warn({ err: status.error }, "NATS server error");
          break;
        case "slowConsumer":
          logger.warn({ subject: status.sub.getSubject(), pending: status.pending }, "NATS slow consumer");
          break;
        default:
          break;
      }
    }
  })().catch((err: unknown) => logger.debug({ err }, "NATS status monitor ended"));
  logger.debug({}, "NATS connected");
  return { connection, monitorDone };
}

function isAuthFailure(err: unknown): boolean {
  return err instanceof AuthorizationError || err instanceof UserAuthenticationExpiredError;
}

/** A certificate refused by either side, or a server that requires TLS the client was not configured for. */
function isTlsFailure(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (
      typeof code === "string" &&
      /CERT|SELF_SIGNED|ERR_SSL|ERR_TLS|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)
    ) {
      return true;
    }
  }
  return false;
}

/** Drains a connection (flushing buffered publishes), falling back to close after `timeoutMs`. */
export async function drainNats(connection: NatsConnection, timeoutMs = 2_000): Promise<void> {
  if (connection.isClosed()) return;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const drained = connection.drain().then(
    () => "drained" as const,
    () => "failed" as const,
  );
  try {
    // Draining fails or hangs when the connection is already closing or disconnected: close it outright.
    const outcome = await Promise.race([drained, timedOut]);
    if (outcome !== "drained" && !connection.isClosed()) await connection.close().catch(() => {});
  } finally {
    clearTimeout(timer);
  }
}
