import type { Logger } from "@tdist/runtime";
import type { FastifyInstance } from "fastify";
import { type ApiKeyAuth, unauthorizedError } from "./api-key-auth.js";
import { type ConcurrencyLimit, RETRY_AFTER_SECONDS } from "./concurrency-limit.js";
import type { FrontendMetrics } from "./frontend-metrics.js";

export interface RequestGates {
  /** Set: every route but the open ones needs one of its keys. */
  auth?: ApiKeyAuth;
  /** With `auth`: whether `/metrics` needs a key too. */
  metricsAuth: boolean;
  /** Set: POST requests (the ones that run a model) over the cap get 429. */
  limit?: ConcurrencyLimit;
  metrics: FrontendMetrics;
  logger: Logger;
}

/** Probes that must answer without a key: load balancers and kubelets hold none. */
const ALWAYS_OPEN: ReadonlySet<string> = new Set(["/health", "/live"]);

/**
 * The checks every request passes before a route sees it: the API key,
 * then the concurrency cap (a client without a key must not take a slot,
 * nor learn how loaded the server is).
 */
export function installRequestGates(app: FastifyInstance, gates: RequestGates): void {
  const { auth, limit, metrics, logger } = gates;
  if (auth === undefined && limit === undefined) return;
  app.addHook("onRequest", async (request, reply) => {
    const path = request.url.split("?", 1)[0] ?? request.url;
    // CORS preflights carry no credentials by design; @fastify/cors answers them.
    const open = request.method === "OPTIONS" || ALWAYS_OPEN.has(path) || (path === "/metrics" && !gates.metricsAuth);
    if (auth !== undefined && !open) {
      const refusal = auth.check(request.headers.authorization);
      if (refusal !== undefined) {
        metrics.rejectedRequests.inc({ reason: "unauthorized" });
        // The header is not logged: a wrong key is often a right key for another service.
        logger.debug({ path, remoteAddress: request.ip, reason: refusal }, "request refused: no valid API key");
        return reply.status(401).header("www-authenticate", "Bearer").send(unauthorizedError(refusal).body());
      }
    }
    if (limit !== undefined && request.method === "POST") {
      const release = limit.tryEnter();
      if (release === undefined) {
        metrics.rejectedRequests.inc({ reason: "concurrency_limit" });
        logger.debug({ path, active: limit.active, max: limit.max }, "request refused: concurrency limit");
        return reply.status(429).header("retry-after", String(RETRY_AFTER_SECONDS)).send(limit.refusal().body());
      }
      // `close` fires once the response has ended or the client left, hijacked streams included.
      reply.raw.once("close", release);
    }
    return undefined;
  });
}
