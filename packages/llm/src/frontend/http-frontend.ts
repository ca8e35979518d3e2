import type { AddressInfo } from "node:net";
import cors from "@fastify/cors";
import { type DistributedRuntime, type Logger, type RouterMode, type RouterPolicy, silentLogger } from "@tdist/runtime";
import Fastify, { type FastifyError, type FastifyInstance } from "fastify";
import { type DisaggregationOptions, resolveDisaggregationOptions } from "../disagg/disagg-policy.js";
import type { LlmRouterMode } from "../kv-router/create-router-policy.js";
import { ApiKeyAuth } from "./api-key-auth.js";
import { ConcurrencyLimit } from "./concurrency-limit.js";
import { FrontendMetrics } from "./frontend-metrics.js";
import {
  answerClientError,
  createFrontendServer,
  type FrontendTls,
  type HttpServerLimitOptions,
  resolveHttpServerLimits,
} from "./http-server-limits.js";
import { InflightRequests } from "./inflight-requests.js";
import { type KvRouterKnobs, ModelManager, type PipelineFactory } from "./model-manager.js";
import type { ModelPipeline } from "./model-pipeline.js";
import { HttpError, logHttpError, toHttpError } from "./openai-errors.js";
import { registerOpenAIRoutes, SHUTTING_DOWN } from "./openai-routes.js";
import { installRequestGates } from "./request-gates.js";

export interface HttpFrontendOptions extends HttpServerLimitOptions {
  runtime: DistributedRuntime;
  createPipeline: PipelineFactory<ModelPipeline>;
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** Runtime policy or mode, or an LLM router mode (`kv`, `kv-approx`, `sglang`, `llm-d`). */
  router?: RouterPolicy | RouterMode | LlmRouterMode;
  /** KV router knobs (`kv`, `kv-approx`): overlap weight, softmax temperature, replica sync, busy thresholds. */
  kvRouter?: KvRouterKnobs;
  /** Only serve models registered in this namespace (default: every namespace). */
  namespace?: string;
  /**
   * When a request is prefilled on a prefill worker (models with prefill
   * workers): `minUncachedTokens` (default 512) and `prefillBusyTokens`
   * (default 8192).
   */
  disaggregation?: DisaggregationOptions;
  /**
   * Largest request body accepted; larger gets 413 stating the limit. Default
   * 16 MiB: above what any context fits (a prompt too long for its model's
   * context is refused from its size, before it is tokenized).
   */
  bodyLimitBytes?: number;
  logger?: Logger;
  metricsPrefix?: string;
  /** Migrations per request when its worker fails (overrides the model cards' `migrationLimit`; 0: none). */
  migrationLimit?: number;
  /**
   * Browser origins allowed to call the API (CORS), e.g. `["https://app.example.com"]`, or
   * `["*"]` for any. Default none: no CORS headers, so browsers on other origins are refused.
   */
  corsOrigins?: readonly string[];
  /** Serves `GET /status` with what this returns (the CLI: its runtime's discovery view); default no route. */
  status?: () => Promise<unknown>;
  /**
   * API keys, any one of which a client must send as `Authorization: Bearer
   * KEY` (what OpenAI clients send); others get 401 `invalid_api_key`.
   * `/health` and `/live` stay open; `/status` (it shows the topology) does
   * not. Default none: no key needed.
   */
  apiKeys?: readonly string[];
  /**
   * With `apiKeys`: whether `/metrics` needs a key too. Default false, as in
   * Dynamo and vLLM: Prometheus scrapers are usually set up without one, and
   * the metrics hold counts, never request content.
   */
  metricsAuth?: boolean;
  /** Serve HTTPS with this certificate and key (PEM contents); `url` becomes `https://`. */
  tls?: FrontendTls;
  /**
   * Requests (POSTs: the ones that run a model) served at once; more get
   * 429 `too_many_requests` with `Retry-After`, counted in
   * `dynamo_frontend_rejected_requests_total{reason="concurrency_limit"}`.
   * Default no cap.
   */
  maxConcurrentRequests?: number;
}

/** How long `close()` lets in-flight requests run before cancelling them. */
export const DEFAULT_CLOSE_GRACE_MS = 10_000;
/** After cancelling, how long streams get to write their last events before every connection is closed. */
const CANCELLED_FLUSH_MS = 200;
/** Paths still answered while draining (the process is alive; everything else gets `shutting_down`). */
const ANSWERED_WHILE_DRAINING: ReadonlySet<string> = new Set(["/live", "/metrics"]);

/**
 * The OpenAI-compatible HTTP frontend: `/v1/models`, `/v1/chat/completions`,
 * `/v1/completions` (streaming via SSE), `/health`, `/live`, `/metrics`.
 * Models come and go with their workers' cards in discovery.
 *
 * ```ts
 * const frontend = await HttpFrontend.start({ runtime, createPipeline, port: 8000 });
 * console.log(frontend.url); // http://127.0.0.1:8000
 * ```
 */
export class HttpFrontend {
  private constructor(
    readonly app: FastifyInstance,
    readonly models: ModelManager<ModelPipeline>,
    readonly metrics: FrontendMetrics,
    readonly url: string,
    readonly port: number,
    private readonly shutdown: AbortController,
    private readonly inflight: InflightRequests,
    private readonly draining: { value: boolean },
    /** Whether clients must send an API key (`apiKeys` was given). */
    readonly requiresApiKey: boolean,
  ) {}

  static async start(options: HttpFrontendOptions): Promise<HttpFrontend> {
    const logger = options.logger ?? silentLogger;
    const disaggregation = resolveDisaggregationOptions(options.disaggregation);
    // Every option is checked before anything starts watching discovery.
    const limits = resolveHttpServerLimits(options);
    const auth = options.apiKeys === undefined ? undefined : new ApiKeyAuth(options.apiKeys);
    const limit =
      options.maxConcurrentRequests === undefined ? undefined : new ConcurrencyLimit(options.maxConcurrentRequests);
    const tls = options.tls;
    const metrics = new FrontendMetrics(options.metricsPrefix);
    const models = new ModelManager<ModelPipeline>(options.runtime, {
      createPipeline: options.createPipeline,
      logger,
      ...(options.router ? { router: options.router } : {}),
      registry: metrics.registry,
      ...(options.kvRouter ? { kvRouter: options.kvRouter } : {}),
      ...(options.namespace ? { namespace: options.namespace } : {}),
      disaggregation,
      disaggregationMetrics: metrics.disaggregation,
    });
    await models.start();
    const bodyLimit = options.bodyLimitBytes ?? 16 * 1024 * 1024;
    let app: FastifyInstance;
    try {
      app = Fastify({
        bodyLimit,
        logger: false,
        serverFactory: (handler) => createFrontendServer(limits, tls, handler),
        clientErrorHandler: answerClientError,
        ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
      });
    } catch (err) {
      // A certificate that cannot be used must not leave the model watch running.
      await models.close();
      throw err;
    }
    const corsOrigins = options.corsOrigins ?? [];
    if (corsOrigins.length > 0) {
      await app.register(cors, { origin: corsOrigins.includes("*") ? "*" : [...corsOrigins] });
    }
    const draining = { value: false };
    // While draining the server keeps listening, so a new request, on a new connection too, hears why it is refused.
    app.addHook("onRequest", async (request, reply) => {
      if (!draining.value || ANSWERED_WHILE_DRAINING.has(request.url)) return;
      await reply.status(503).header("connection", "close").send(SHUTTING_DOWN.body());
    });
    installRequestGates(app, {
      ...(auth ? { auth } : {}),
      ...(limit ? { limit } : {}),
      metricsAuth: options.metricsAuth ?? false,
      metrics,
      logger,
    });
    app.setErrorHandler((error: FastifyError, request, reply) => {
      const httpError = fromFastifyError(error, bodyLimit);
      const model = (request.body as { model?: unknown } | undefined)?.model;
      logHttpError(logger, httpError, typeof model === "string" ? model : undefined);
      if (reply.raw.headersSent) {
        reply.raw.end();
        return;
      }
      void reply.status(httpError.statusCode).send(httpError.body());
    });
    app.setNotFoundHandler((request, reply) => {
      void reply
        .status(404)
        .send(new HttpError(404, `no route for ${request.method} ${request.url}`, "not_found_error").body());
    });
    const shutdown = new AbortController();
    const inflight = new InflightRequests();
    registerOpenAIRoutes(app, {
      models,
      metrics,
      shutdown: shutdown.signal,
      inflight,
      logger,
      migrationLimit: options.migrationLimit,
      migrationMetrics: metrics.migration,
    });
    app.get("/live", async () => ({ status: "live" }));
    app.get("/health", async (_request, reply) => {
      const health = healthOf(models);
      return reply.status(health.status === "healthy" ? 200 : 503).send(health);
    });
    app.get("/metrics", async (_request, reply) => {
      return reply.header("content-type", metrics.registry.contentType).send(await metrics.registry.metrics());
    });
    const status = options.status;
    if (status) app.get("/status", async () => status());
    const host = options.host ?? "127.0.0.1";
    try {
      await app.listen({ host, port: options.port ?? 8000 });
    } catch (err) {
      // A port in use (or any failure to listen) must not leave the model watch running.
      await app.close();
      await models.close();
      throw err;
    }
    const { port } = app.server.address() as AddressInfo;
    const shownHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
    const scheme = tls === undefined ? "http" : "https";
    return new HttpFrontend(
      app,
      models,
      metrics,
      `${scheme}://${shownHost}:${port}`,
      port,
      shutdown,
      inflight,
      draining,
      auth !== undefined,
    );
  }

  /**
   * Stops taking requests: from now on new ones, on new connections too, get
   * a 503 `shutting_down` (`/live` and `/metrics` still answer). Requests in
   * flight run for up to `graceMs` (default 10 s), then are cancelled down to
   * their engines: a stream ends with its `cancelled` chunks and an error
   * event (`shutting_down`), a unary request gets a 503. The server stops
   * listening once none is left.
   */
  async close(options: { graceMs?: number } = {}): Promise<void> {
    if (this.draining.value) return;
    this.draining.value = true;
    const graceMs = options.graceMs ?? DEFAULT_CLOSE_GRACE_MS;
    let graceTimer: NodeJS.Timeout | undefined;
    const graceEnded = new Promise<void>((resolve) => {
      graceTimer = setTimeout(resolve, graceMs);
    });
    let flushTimer: NodeJS.Timeout | undefined;
    const cancelled = graceEnded.then(() => {
      this.shutdown.abort();
      // Cancelled requests end at once; one that does not must not hold the close up.
      return new Promise<void>((resolve) => {
        flushTimer = setTimeout(resolve, CANCELLED_FLUSH_MS);
      });
    });
    try {
      await Promise.race([this.inflight.idle(), cancelled]);
    } finally {
      clearTimeout(graceTimer);
      clearTimeout(flushTimer);
    }
    const server = this.app.server;
    // What is left is idle keep-alive connections or responses being written: give those a moment, no more.
    const closeAll = setTimeout(() => server.closeAllConnections(), CANCELLED_FLUSH_MS);
    server.closeIdleConnections();
    try {
      await this.app.close();
    } finally {
      clearTimeout(closeAll);
    }
    await this.models.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** What the fields with several accepted forms accept, for validation messages (array indexes as `N`). */
const FIELD_FORMS: Record<string, string> = {
  prompt:
    "a non-empty string, a non-empty array of strings, a non-empty array of token ids (integers >= 0) or an array of such arrays",
  "messages.N.content": "a string, an array of content parts or null",
};

/**
 * `/health`: healthy while every model has a live worker. A model whose
 * workers are all unreachable (their connection failed; their lease has not
 * expired yet) makes it unhealthy and is named; so does serving no model.
 */
function healthOf(models: ModelManager<ModelPipeline>): {
  status: "healthy" | "unhealthy";
  models: {
    name: string;
    status: "healthy" | "unhealthy";
    workers: number;
    live_workers: number;
    prefill_workers?: number;
    live_prefill_workers?: number;
  }[];
  message?: string;
} {
  const entries = models.health().map((model) => ({
    name: model.name,
    status: model.liveWorkers > 0 ? ("healthy" as const) : ("unhealthy" as const),
    workers: model.workers,
    live_workers: model.liveWorkers,
    // Prefill workers only speed a model up: without them its decode workers serve it aggregated.
    ...(model.prefillWorkers > 0
      ? { prefill_workers: model.prefillWorkers, live_prefill_workers: model.livePrefillWorkers }
      : {}),
  }));
  const down = entries.filter((entry) => entry.status === "unhealthy").map((entry) => JSON.stringify(entry.name));
  if (entries.length === 0) return { status: "unhealthy", models: entries, message: "no model is served" };
  if (down.length === 0) return { status: "healthy", models: entries };
  const message = `${down.length === 1 ? "model" : "models"} ${down.join(", ")} ${down.length === 1 ? "has" : "have"} no live workers`;
  return { status: "unhealthy", models: entries, message };
}

/** Turns fastify's own errors (validation, body parsing, size) into OpenAI error bodies. */
function fromFastifyError(error: FastifyError, bodyLimit: number): HttpError {
  if (error instanceof HttpError) return error;
  if (error.validation && error.validation.length > 0) {
    const issue = error.validation[0];
    const path = (issue?.instancePath ?? "").replace(/^\//, "").replaceAll("/", ".");
    const missing = (issue?.params as { missingProperty?: string } | undefined)?.missingProperty;
    const param = missing ? (path ? `${path}.${missing}` : missing) : path || null;
    // A value that fits none of a field's forms: the first form's complaint ("must be string") misleads.
    const forms = error.validation.some((v) => v.keyword === "anyOf")
      ? FIELD_FORMS[(param ?? "").replace(/\.\d+\./g, ".N.")]
      : undefined;
    const message = missing
      ? `missing required parameter: ${param}`
      : `invalid parameter ${param ?? "body"}: ${forms ? `must be ${forms}` : (issue?.message ?? "invalid value")}`;
    return HttpError.badRequest(message, param, "invalid_value");
  }
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new HttpError(
        413,
        `request body is larger than this server's limit of ${bodyLimit} bytes`,
        "invalid_request_error",
        null,
        "body_too_large",
      );
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return HttpError.badRequest(`request body is not valid JSON: ${error.message}`, null, "invalid_json");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new HttpError(
        415,
        "content-type must be application/json",
        "invalid_request_error",
        null,
        "unsupported_media_type",
      );
    default:
      break;
  }
  if (typeof error.statusCode === "number" && error.statusCode >= 400 && error.statusCode < 500) {
    return new HttpError(error.statusCode, error.message, "invalid_request_error", null, error.code ?? null);
  }
  return toHttpError(error);
}
