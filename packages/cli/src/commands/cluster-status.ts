import type { Discovery } from "@tdist/runtime";

export interface StatusInstance {
  instanceId: string;
  transport: string;
  ageSeconds: number;
}

export interface StatusEndpoint {
  namespace: string;
  component: string;
  endpoint: string;
  instances: StatusInstance[];
}

export interface StatusModel {
  namespace: string;
  component: string;
  endpoint: string;
  instanceId: string;
  name: string;
}

export interface ClusterStatus {
  discovery: string;
  endpoints: StatusEndpoint[];
  models: StatusModel[];
}

/** Reads the cluster's registrations from discovery (`v1/instances/`, `v1/models/`). */
export async function readStatus(discovery: Discovery, now = Date.now()): Promise<ClusterStatus> {
  const endpoints = new Map<string, StatusEndpoint>();
  for (const { key, value } of await discovery.list("v1/instances/")) {
    const [, , namespace = "", component = "", endpoint = "", instanceId = ""] = key.split("/");
    let record: { transport?: Record<string, string>; registeredAt?: number } = {};
    try {
      // `null`, a number or a string is valid JSON too: only an object is read as a record.
      const parsed: unknown = JSON.parse(value);
      if (typeof parsed === "object" && parsed !== null) record = parsed as typeof record;
    } catch {
      // Listed with an unknown transport below.
    }
    const id = `${namespace}/${component}/${endpoint}`;
    let entry = endpoints.get(id);
    if (!entry) {
      entry = { namespace, component, endpoint, instances: [] };
      endpoints.set(id, entry);
    }
    const transport =
      typeof record.transport === "object" && record.transport !== null
        ? Object.entries(record.transport).map(([k, v]) => `${k}://${String(v)}`)[0]
        : undefined;
    entry.instances.push({
      instanceId,
      transport: transport ?? "unknown",
      ageSeconds:
        Number.isFinite(record.registeredAt) && record.registeredAt
          ? Math.max(0, Math.round((now - record.registeredAt) / 1000))
          : 0,
    });
  }
  const models: StatusModel[] = [];
  for (const { key, value } of await discovery.list("v1/models/")) {
    const [, , namespace = "", component = "", endpoint = "", instanceId = ""] = key.split("/");
    let name = "unknown";
    try {
      const card = JSON.parse(value) as { name?: unknown; displayName?: unknown } | null;
      if (typeof card?.name === "string") name = card.name;
    } catch {
      // Keep "unknown".
    }
    models.push({ namespace, component, endpoint, instanceId, name });
  }
  return { discovery: discovery.kind, endpoints: [...endpoints.values()], models };
}

export function formatStatus(status: ClusterStatus): string {
  const lines: string[] = [`discovery: ${status.discovery}`];
  if (status.endpoints.length === 0) lines.push("no instances registered");
  let namespace = "";
  let component = "";
  for (const entry of status.endpoints) {
    if (entry.namespace !== namespace) {
      namespace = entry.namespace;
      component = "";
      lines.push(`namespace ${namespace}`);
    }
    if (entry.component !== component) {
      component = entry.component;
      lines.push(`  component ${component}`);
    }
    lines.push(`    endpoint ${entry.endpoint} (${entry.instances.length} instance(s))`);
    for (const instance of entry.instances) {
      lines.push(`      ${instance.instanceId}  ${instance.transport}  age ${instance.ageSeconds}s`);
    }
  }
  if (status.models.length > 0) {
    lines.push("models");
    for (const model of status.models) {
      lines.push(`  ${model.name}  ${model.namespace}/${model.component}/${model.endpoint}  ${model.instanceId}`);
    }
  }
  return lines.join("\n");
}
