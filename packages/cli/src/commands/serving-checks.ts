import { Env, type Logger, readEnv, TdistError } from "@tdist/runtime";

/**
 * Refuses cluster commands whose planes can never meet: with memory
 * discovery a frontend and a worker in different processes never find
 * each other, and every request would 503 with no hint why.
 */
export function requireSharedDiscovery(command: "frontend" | "worker", env: NodeJS.ProcessEnv): void {
  if (readEnv(Env.discovery, env) !== "memory") return;
  throw new TdistError(
    "invalid_option",
    `tdist ${command} uses discovery to meet the ${command === "frontend" ? "workers" : "frontend"}, and memory discovery is private to one process: ` +
      "pass --discovery etcd --etcd-endpoints http://HOST:2379 (TDIST_DISCOVERY, TDIST_ETCD_ENDPOINTS), " +
      "or run everything in one process with `tdist run`",
  );
}

/** A kv router across processes needs the workers' KV events on NATS; without it, it would route blind. */
export function requireKvEventsReachable(routerMode: string, env: NodeJS.ProcessEnv): void {
  if (routerMode !== "kv" || readEnv(Env.discovery, env) === "memory") return;
  if (readEnv(Env.eventPlane, env) === "nats") return;
  throw new TdistError(
    "invalid_option",
    "--router-mode kv routes on the workers' KV events, which reach other processes only over NATS: " +
      "pass --nats-url nats://HOST:4222 to the frontend and the workers, or use --router-mode kv-approx (no events needed)",
  );
}

/** A worker whose engine publishes KV events that no other process can receive: say so once. */
export function warnIfKvEventsStayLocal(publishesEvents: boolean, env: NodeJS.ProcessEnv, logger: Logger): void {
  if (!publishesEvents || readEnv(Env.discovery, env) === "memory" || readEnv(Env.eventPlane, env) === "nats") return;
  logger.warn(
    {},
    "this worker's KV events stay in this process (event plane memory): a --router-mode kv frontend cannot see them; pass --nats-url nats://HOST:4222",
  );
}
