import { Env, type RuntimeOptions, readEnv, TdistError } from "@tdist/runtime";

/** Flags every command that builds a runtime accepts; each falls back to its TDIST_* variable. */
export const runtimeFlags = {
  discovery: { type: "string" },
  "etcd-endpoints": { type: "string" },
  "nats-url": { type: "string" },
  "request-plane": { type: "string" },
  "event-plane": { type: "string" },
  namespace: { type: "string" },
  "log-level": { type: "string" },
} as const;

export interface RuntimeFlagValues {
  discovery?: string | undefined;
  "etcd-endpoints"?: string | undefined;
  "nats-url"?: string | undefined;
  "request-plane"?: string | undefined;
  "event-plane"?: string | undefined;
  namespace?: string | undefined;
  "log-level"?: string | undefined;
}

/**
 * Turns flags into the environment the runtime reads: a flag overrides its
 * variable, and the runtime validates both the same way.
 */
export function flagsToEnv(values: RuntimeFlagValues, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env };
  const map: [keyof RuntimeFlagValues, string][] = [
    ["discovery", Env.discovery.name],
    ["etcd-endpoints", Env.etcdEndpoints.name],
    ["nats-url", Env.natsUrl.name],
    ["request-plane", Env.requestPlane.name],
    ["event-plane", Env.eventPlane.name],
    ["namespace", Env.namespace.name],
    ["log-level", Env.logLevel.name],
  ];
  for (const [flag, name] of map) {
    const value = values[flag];
    if (value !== undefined) out[name] = value;
  }
  // Parse everything once now so a bad flag fails before anything starts.
  readEnv(Env.discovery, out);
  readEnv(Env.requestPlane, out);
  readEnv(Env.eventPlane, out);
  readEnv(Env.logLevel, out);
  const namespace = readEnv(Env.namespace, out);
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(namespace)) {
    throw new TdistError("invalid_name", `invalid namespace ${JSON.stringify(namespace)}`);
  }
  return out;
}

export function runtimeOptionsFromEnv(env: NodeJS.ProcessEnv): RuntimeOptions {
  return { env };
}
