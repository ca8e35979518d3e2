import { createServer as createHttpServer, type RequestListener, type Server, type ServerOptions } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";
import { TdistError } from "@tdist/runtime";
import { HttpError } from "./openai-errors.js";

/** The frontend's certificate and private key (PEM contents, not paths). */
export interface FrontendTls {
  cert: string | Buffer;
  key: string | Buffer;
}

/** Limits of the HTTP server itself, against clients that send too much or too slowly. */
export interface HttpServerLimitOptions {
  /** Largest request head (request line and headers); larger gets 431. Default 16 KiB (Node's). */
  maxHeaderBytes?: number;
  /** Time a client has to send the whole request head; slower gets 408 and is disconnected. Default 20 s. */
  headersTimeoutMs?: number;
  /** Time a client has to send the whole request, body included. Default 120 s. Responses are not limited. */
  requestTimeoutMs?: number;
  /** How long an idle keep-alive connection stays open for its next request. Default 5 s. */
  keepAliveTimeoutMs?: number;
}

export type ResolvedHttpServerLimits = Required<HttpServerLimitOptions>;

export const DEFAULT_HTTP_SERVER_LIMITS: ResolvedHttpServerLimits = {
  maxHeaderBytes: 16 * 1024,
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5_000,
};

export function resolveHttpServerLimits(options: HttpServerLimitOptions): ResolvedHttpServerLimits {
  const resolved = { ...DEFAULT_HTTP_SERVER_LIMITS };
  for (const name of Object.keys(DEFAULT_HTTP_SERVER_LIMITS) as (keyof ResolvedHttpServerLimits)[]) {
    const value = options[name];
    if (value === undefined) continue;
    if (!Number.isInteger(value) || value < 1) {
      throw new TdistError("invalid_option", `${name} must be an integer >= 1, got ${String(value)}`);
    }
    resolved[name] = value;
  }
  if (resolved.headersTimeoutMs > resolved.requestTimeoutMs) {
    throw new TdistError(
      "invalid_option",
      `headersTimeoutMs (${resolved.headersTimeoutMs}) must not exceed requestTimeoutMs (${resolved.requestTimeoutMs})`,
    );
  }
  return resolved;
}

/**
 * Builds the node server fastify runs on, so the limits that only
 * `createServer` takes (header size, header timeout, how often timeouts are
 * checked) are set, over TLS when `tls` is given.
 */
export function createFrontendServer(
  limits: ResolvedHttpServerLimits,
  tls: FrontendTls | undefined,
  handler: RequestListener,
): Server {
  const options: ServerOptions = {
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // Node checks the two timeouts on this interval (default 30 s): a slow client would otherwise keep its socket that much longer.
    connectionsCheckingInterval: Math.min(1_000, Math.max(50, Math.floor(limits.headersTimeoutMs / 4))),
  };
  const server = tls === undefined ? createHttpServer(options, handler) : createTlsServer(options, tls, handler);
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  return server;
}

function createTlsServer(options: ServerOptions, tls: FrontendTls, handler: RequestListener): Server {
  try {
    // An https server is an http server as far as fastify is concerned (same request/response objects and connection API).
    return createHttpsServer({ ...options, cert: tls.cert, key: tls.key }, handler) as unknown as Server;
  } catch (err) {
    // Node's message names the PEM problem, never the key's contents.
    throw new TdistError(
      "invalid_option",
      `tls: the certificate or key cannot be used (${(err as Error).message}); give a PEM certificate and its unencrypted PEM key`,
      { cause: err },
    );
  }
}

/**
 * What a client whose request never became one gets (head too large, too
 * slow, unparsable): an OpenAI error body, then the socket is closed.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const error = clientErrorOf(err);
  const body = JSON.stringify(error.body());
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${error.statusCode} ${statusText(error.statusCode)}\r\nconnection: close\r\n` +
        `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

function clientErrorOf(err: NodeJS.ErrnoException): HttpError {
  if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
    return new HttpError(408, "the request was not received in time", "invalid_request_error", null, "timeout");
  }
  if (err.code === "HPE_HEADER_OVERFLOW") {
    return new HttpError(
      431,
      "the request's headers are larger than this server's limit",
      "invalid_request_error",
      null,
      "headers_too_large",
    );
  }
  return new HttpError(400, "the request is not valid HTTP", "invalid_request_error", null, "bad_request");
}

function statusText(status: number): string {
  return { 400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large" }[status] ?? "Error";
}
