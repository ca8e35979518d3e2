import type { TransportAddress } from "../request-plane/request-plane.js";

/** One live instance of an endpoint, as read from discovery. */
export interface Instance {
  /** 64-bit instance id as lower-case hex (the lease id in cluster mode). */
  readonly instanceId: string;
  readonly namespace: string;
  readonly component: string;
  readonly endpoint: string;
  readonly transport: TransportAddress;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** When this client first saw the instance (ms since epoch). */
  readonly registeredAt: number;
}

/** The discovery record stored under `v1/instances/...`. */
export interface InstanceRecord {
  instanceId: string;
  namespace: string;
  component: string;
  endpoint: string;
  transport: TransportAddress;
  metadata: Record<string, unknown>;
  registeredAt: number;
}

export function instanceKeyPrefix(namespace: string, component: string, endpoint: string): string {
  return `v1/instances/${namespace}/${component}/${endpoint}/`;
}

export function instanceKey(namespace: string, component: string, endpoint: string, instanceId: string): string {
  return `${instanceKeyPrefix(namespace, component, endpoint)}${instanceId}`;
}

/** A discovery value read as an instance record, or why it is not one. */
export type InstanceRecordReading = { record: InstanceRecord } | { problem: string };

/** Parses a discovery value into an instance, or undefined when it is not a valid record. */
export function parseInstanceRecord(value: string): InstanceRecord | undefined {
  const reading = readInstanceRecord(value);
  return "record" in reading ? reading.record : undefined;
}

// Far above any real host:port or subject, low enough that a hostile value is not copied around.
const MAX_ADDRESS_LENGTH = 1024;
const TCP_ADDRESS = /^\S+:\d{1,5}$/;
const NATS_SUBJECT = /^[^\s*>]+$/;

/**
 * Parses a discovery value into an instance record, naming the first field
 * that is wrong. Anything another process (or a stranger with write access
 * to the store) put there is checked, since a record that routing accepts
 * becomes an address requests are sent to.
 */
export function readInstanceRecord(value: string): InstanceRecordReading {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return { problem: "not JSON" };
  }
  if (!isPlainObject(parsed)) return { problem: "not a JSON object" };
  const record = parsed as Partial<Record<keyof InstanceRecord, unknown>>;
  if (typeof record.instanceId !== "string" || record.instanceId.length === 0) return { problem: "instanceId" };
  const transport = transportOf(record.transport);
  if (transport === undefined) return { problem: "transport" };
  if (record.metadata !== undefined && !isPlainObject(record.metadata)) return { problem: "metadata" };
  return {
    record: {
      instanceId: record.instanceId,
      namespace: String(record.namespace),
      component: String(record.component),
      endpoint: String(record.endpoint),
      transport,
      metadata: (record.metadata as Record<string, unknown> | undefined) ?? {},
      registeredAt:
        typeof record.registeredAt === "number" && Number.isFinite(record.registeredAt) && record.registeredAt >= 0
          ? record.registeredAt
          : Date.now(),
    },
  };
}

function transportOf(value: unknown): TransportAddress | undefined {
  if (!isPlainObject(value)) return undefined;
  const { tcp, nats } = value as { tcp?: unknown; nats?: unknown };
  if ((tcp === undefined) === (nats === undefined)) return undefined;
  if (tcp !== undefined) {
    return typeof tcp === "string" && tcp.length <= MAX_ADDRESS_LENGTH && TCP_ADDRESS.test(tcp) ? { tcp } : undefined;
  }
  return typeof nats === "string" && nats.length <= MAX_ADDRESS_LENGTH && NATS_SUBJECT.test(nats)
    ? { nats }
    : undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
