import { randomBytes } from "node:crypto";

/** A random non-zero 63-bit id as lower-case hex (the shape of an etcd lease id). */
export function randomId64(): string {
  const bytes = randomBytes(8);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  const id = bytes.readBigUInt64BE(0);
  return id === 0n ? "1" : id.toString(16);
}

let requestCounter = 0;
const processTag = randomBytes(4).toString("hex");

/** A request id unique within the cluster with overwhelming probability, cheap to make. */
export function newRequestId(): string {
  requestCounter = (requestCounter + 1) >>> 0;
  return `${processTag}-${Date.now().toString(36)}-${requestCounter.toString(36)}`;
}
