/**
 * The one registry of error codes. Every error the runtime raises carries one
 * of these codes; callers branch on `code` or `category`, never on message text.
 *
 * Categories are what routing and retry logic act on (docs/architecture.md, "Runtime").
 */
export const ErrorCategories = [
  "no_instances",
  "cannot_connect",
  "disconnected",
  "timeout",
  "remote_handler",
  "bad_request",
  "shutting_down",
  "cancelled",
  "internal",
] as const;

export type ErrorCategory = (typeof ErrorCategories)[number];

export const ErrorCodes = {
  /** No live instance of the endpoint to route to. */
  no_instances: "no_instances",
  /** A direct route named an instance id that is not (or no longer) registered. */
  instance_not_found: "no_instances",
  /** The request reached a server that does not serve the endpoint path. */
  endpoint_not_found: "no_instances",
  /** Every instance is over its busy threshold: the request is shed (load shedding); retry later. */
  all_workers_busy: "no_instances",
  /** Opening a connection to the instance failed. */
  cannot_connect: "cannot_connect",
  /** The connection carrying a stream was lost before the stream ended. */
  disconnected: "disconnected",
  /** The peer sent bytes that are not a valid frame; the connection is closed. */
  protocol_error: "disconnected",
  /** A frame larger than the configured maximum; refused, never allocated. */
  frame_too_large: "bad_request",
  /** A deadline or wait expired. */
  timeout: "timeout",
  /** The remote handler threw; its message travels with the error. */
  remote_handler: "remote_handler",
  /** The request or its options are invalid. */
  bad_request: "bad_request",
  /** A namespace, component or endpoint name failed validation. */
  invalid_name: "bad_request",
  /** An option or environment variable has an invalid value. */
  invalid_option: "bad_request",
  /** A request body could not be encoded or decoded by the codec. */
  codec_error: "bad_request",
  /** The endpoint is already served by this runtime. */
  already_serving: "bad_request",
  /** The runtime or server is draining and does not accept new work. */
  shutting_down: "shutting_down",
  /** The request was cancelled (killed) by the caller. */
  cancelled: "cancelled",
  /**
   * A server the runtime needs (etcd, NATS) did not answer within the startup
   * wait (`TDIST_STARTUP_TIMEOUT_MS`); the message names it, its endpoints,
   * the time waited and the last failure.
   */
  dependency_unavailable: "cannot_connect",
  /**
   * A server the runtime needs (etcd, NATS) refused its credentials, or asked
   * for credentials none were given for; not retried. The message names the
   * server and never the secret.
   */
  unauthorized: "cannot_connect",
  /** A TLS handshake failed: a certificate either side does not trust, or TLS on one side only; not retried. */
  tls_failed: "cannot_connect",
  /** A discovery backend operation failed. */
  discovery_error: "cannot_connect",
  /** A lease expired or was revoked while still in use. */
  lease_lost: "disconnected",
  /** An event plane or work queue backend operation failed. */
  event_plane_error: "cannot_connect",
  /** A KV transfer id that is unknown here: never offered, expired, released, or already fetched. */
  kv_transfer_not_found: "no_instances",
  /**
   * A KV transfer ended before its last byte: the sender died, withdrew the
   * offer or its source failed, or the connection was lost.
   */
  kv_transfer_failed: "disconnected",
  /** The bytes of a KV transfer do not match the handle's byte count or checksum. */
  kv_transfer_checksum: "disconnected",
  /** An unexpected internal failure. */
  internal: "internal",
} as const satisfies Record<string, ErrorCategory>;

export type ErrorCode = keyof typeof ErrorCodes;

export function categoryOf(code: ErrorCode): ErrorCategory {
  return ErrorCodes[code];
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ErrorCodes, value);
}
