import type { AddressInfo } from "node:net";
import { type DistributedRuntime, type Logger, type RouterMode, type RouterPolicy, silentLogger } from "@tdist/runtime";
import Fastify, { type FastifyError, type FastifyInstance } from "fastify";
import type { LlmRouterMode } from "../kv-router/create-router-policy.js";
import { FrontendMetrics } from "./frontend-metrics.js";
import { type KvRouterKnobs, ModelManager, type PipelineFactory } from "./model-manager.js";
import type { ModelPipeline } from "./model-pipeline.js";
import { HttpError, toHttpError } from "./openai-errors.js";
import { registerOpenAIRoutes } from "./openai-routes.js";

export interface HttpFrontendOptions {
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
  /** Largest request body accepted; larger gets 413. Default 16 MiB. */
  bodyLimitBytes?: number;
  logger?: Logger;
  metricsPrefix?: string;
}

/** How long `close()` lets in-flight requests run before cancelling them. */
export const DEFAULT_CLOSE_GRACE_MS = 10_000;
/** While closing, how often connections that went idle are closed. */
const IDLE_SWEEP_MS = 50;
/** After cancelling, how long streams get to write their last events before every connection is closed. */
const CANCELLED_FLUSH_MS = 200;

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
  ) {}

  static async start(options: HttpFrontendOptions): Promise<HttpFrontend> {
    const logger = options.logger ?? silentLogger;
    const metrics = new FrontendMetrics(options.metricsPrefix);
    const models = new ModelManager<ModelPipeline>(options.runtime, {
      createPipeline: options.createPipeline,
      logger,
      ...(options.router ? { router: options.router } : {}),
      registry: metrics.registry,
      ...(options.kvRouter ? { kvRouter: options.kvRouter } : {}),
      ...(options.namespace ? { namespace: options.namespace } : {}),
    });
    await models.start();
    const app = Fastify({
      bodyLimit: options.bodyLimitBytes ?? 16 * 1024 * 1024,
      logger: false,
      ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    });
    app.setErrorHandler((error: FastifyError, _request, reply) => {
      const httpError = fromFastifyError(error);
      if (httpError.statusCode >= 500) logger.error({ err: error }, "request failed");
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
    registerOpenAIRoutes(app, { models, metrics, shutdown: shutdown.signal });
    app.get("/live", async () => ({ status: "live" }));
    app.get("/health", async (_request, reply) => {
      const ready = models.hasLiveWorker();
      const body = {
        status: ready ? "healthy" : "unhealthy",
        models: models.list().map((entry) => ({ name: entry.name, workers: entry.liveWorkers().length })),
      };
      return reply.status(ready ? 200 : 503).send(body);
    });
    app.get("/metrics", async (_request, reply) => {
      return reply.header("content-type", metrics.registry.contentType).send(await metrics.registry.metrics());
    });
    const host = options.host ?? "127.0.0.1";
    await app.listen({ host, port: options.port ?? 8000 });
    const { port } = app.server.address() as AddressInfo;
    const shownHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
    return new HttpFrontend(app, models, metrics, `http://${shownHost}:${port}`, port, shutdown);
  }

  /**
   * Stops taking requests (new ones get a 503), lets those in flight run
   * for up to `graceMs` (default 10 s), then cancels the rest down to their
   * engines: a stream ends with its `cancelled` chunks and an error event
   * (`shutting_down`), a unary request gets a 503.
   */
  async close(options: { graceMs?: number } = {}): Promise<void> {
    const graceMs = options.graceMs ?? DEFAULT_CLOSE_GRACE_MS;
    const server = this.app.server;
    const timer = setTimeout(() => {
      this.shutdown.abort();
      // Cancelled streams write their last events at once; then no socket may hold the close up.
      setTimeout(() => server.closeAllConnections(), CANCELLED_FLUSH_MS).unref();
    }, graceMs);
    // A keep-alive connection whose response ends while closing goes idle: close it then, not after
    // the keep-alive timeout.
    const idle = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    try {
      await this.app.close();
    } finally {
      clearTimeout(timer);
      clearInterval(idle);
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

/** Turns fastify's own errors (validation, body parsing, size) into OpenAI error bodies. */
function fromFastifyError(error: FastifyError): HttpError {
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
      return new HttpError(413, "request body is too large", "invalid_request_error", null, "body_too_large");
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
