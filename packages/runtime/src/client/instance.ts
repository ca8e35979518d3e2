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

/** Parses a discovery value into an instance, or undefined when it is not a valid record. */
export function parseInstanceRecord(value: string): InstanceRecord | undefined {
  try {
    const record = JSON.parse(value) as Partial<InstanceRecord>;
    if (
      typeof record.instanceId !== "string" ||
      typeof record.transport !== "object" ||
      record.transport === null ||
      !("tcp" in record.transport || "nats" in record.transport)
    ) {
      return undefined;
    }
    return {
      instanceId: record.instanceId,
      namespace: String(record.namespace),
      component: String(record.component),
      endpoint: String(record.endpoint),
      transport: record.transport,
      metadata: typeof record.metadata === "object" && record.metadata !== null ? record.metadata : {},
      registeredAt: typeof record.registeredAt === "number" ? record.registeredAt : Date.now(),
    };
  } catch {
    return undefined;
  }
}
