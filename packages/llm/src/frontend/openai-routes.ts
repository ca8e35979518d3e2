import { randomBytes } from "node:crypto";

const idPrefix = randomBytes(6).toString("hex");
let idCounter = 0;

import type { Logger } from "@tdist/runtime";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { PREFILL_WORKER_HEADER } from "../disagg/prefill-router.js";
import { CACHED_BLOCKS_HEADER, WORKER_HEADER } from "../kv-router/llm-router.js";
import type { TokenLogprob } from "../protocol/engine-output.js";
import type {
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatLogprobContent,
  CompletionLogprobs,
  CompletionRequest,
  CompletionResponse,
  OpenAIFinishReason,
  Usage,
} from "../protocol/openai.js";
import type { PreprocessedRequest } from "../protocol/preprocessed-request.js";
import { type ChoiceEvent, type ChoiceSpec, type ChoiceTotals, runChoices } from "./choice-runner.js";
import type { FrontendMetrics } from "./frontend-metrics.js";
import type { InflightRequests } from "./inflight-requests.js";
import type { MigrationMetrics } from "./migration-metrics.js";
import type { ModelEntry, ModelManager } from "./model-manager.js";
import type { ModelPipeline } from "./model-pipeline.js";
import { HttpError, logHttpError, toHttpError } from "./openai-errors.js";
import { chatCompletionSchema, completionSchema } from "./openai-schemas.js";
import { DEFAULT_MIGRATION_LIMIT, type MigrationPolicy } from "./request-migration.js";
import { SseWriter } from "./sse-writer.js";

export interface RouteContext {
  models: ModelManager<ModelPipeline>;
  metrics: FrontendMetrics;
  /** Aborted when the frontend's shutdown grace ends: requests still running are cancelled. */
  shutdown: AbortSignal;
  /** Tracks the requests in flight, so that closing waits for them (and no longer once they are done). */
  inflight: InflightRequests;
  logger: Logger;
  /** Migrations per request when a worker fails; overrides the model cards' `migrationLimit`. */
  migrationLimit?: number | undefined;
  /** Where migrations are counted (the frontend's registry). */
  migrationMetrics?: MigrationMetrics | undefined;
}

/** What a request cut short by shutdown gets: a 503 before its first byte, an SSE error event after. */
export const SHUTTING_DOWN = new HttpError(
  503,
  "the server is shutting down",
  "service_unavailable",
  null,
  "shutting_down",
  {
    routine: true,
  },
);

type Kind = "chat" | "completion";

interface RequestPlan {
  kind: Kind;
  entry: ModelEntry<ModelPipeline>;
  choices: ChoiceSpec[];
  promptTokens: number;
  stopStrings: string[];
  stream: boolean;
  includeUsage: boolean;
  logprobs: number | undefined;
  id: string;
  created: number;
  /** How the request's choices may move to other workers. */
  migration: MigrationPolicy;
}

export function registerOpenAIRoutes(app: FastifyInstance, context: RouteContext): void {
  app.post("/v1/chat/completions", { schema: { body: chatCompletionSchema } }, (request, reply) =>
    handle(context, request, reply, (signal) => planChat(context, request.body as ChatCompletionRequest, signal)),
  );
  app.post("/v1/completions", { schema: { body: completionSchema } }, (request, reply) =>
    handle(context, request, reply, (signal) => planCompletion(context, request.body as CompletionRequest, signal)),
  );
  app.get("/v1/models", async () => ({
    object: "list",
    data: context.models.list().map((entry) => ({
      id: entry.name,
      object: "model",
      created: entry.createdAt,
      owned_by: "tdist",
    })),
  }));
}

/** Plans and serves one request; whatever fails becomes the client-facing error for its model. */
async function handle(
  context: RouteContext,
  request: FastifyRequest,
  reply: FastifyReply,
  plan: (signal: AbortSignal) => Promise<RequestPlan>,
): Promise<unknown> {
  const model = (request.body as { model: string }).model;
  const leave = context.inflight.enter();
  // A client that leaves while its prompt is tokenized off the event loop stops the wait.
  const planning = new AbortController();
  const onClose = (): void => {
    if (!reply.raw.writableFinished) planning.abort();
  };
  reply.raw.once("close", onClose);
  try {
    let planned: RequestPlan;
    try {
      planned = await plan(planning.signal);
    } finally {
      reply.raw.off("close", onClose);
    }
    return await serve(context, request, reply, planned);
  } catch (err) {
    throw toHttpError(err, model);
  } finally {
    leave();
  }
}

function lookup(context: RouteContext, model: string): ModelEntry<ModelPipeline> {
  const entry = context.models.get(model);
  if (!entry) throw HttpError.modelNotFound(model);
  return entry;
}

/** n choices of one prompt: distinct seeds when the caller fixed one, so choices differ but stay reproducible. */
function expandChoices(base: PreprocessedRequest, n: number, firstIndex: number): ChoiceSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    index: firstIndex + i,
    request:
      i === 0 || base.sampling.seed === undefined
        ? base
        : { ...base, sampling: { ...base.sampling, seed: base.sampling.seed + i } },
  }));
}

/**
 * Dynamo's rule: a request with `n > 1` is not migrated (its choices share
 * sampling state a continuation cannot rebuild); otherwise the frontend's
 * limit, else the model card's, else 3.
 */
function migrationFor(context: RouteContext, entry: ModelEntry<ModelPipeline>, n: number, id: string): MigrationPolicy {
  const limit = n > 1 ? 0 : (context.migrationLimit ?? entry.card.migrationLimit ?? DEFAULT_MIGRATION_LIMIT);
  return { limit, requestId: id, metrics: context.migrationMetrics, logger: context.logger };
}

/** Unique per process run without a random draw per request. */
function newId(prefix: string): string {
  idCounter = (idCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `${prefix}-${idPrefix}${idCounter.toString(16).padStart(12, "0")}`;
}

/** Refuses what the server cannot honour rather than ignoring it (the output would not be what was asked for). */
function refuseUnsupported(body: ChatCompletionRequest | CompletionRequest): void {
  const format = body.response_format?.type;
  if (format !== undefined && format !== "text") {
    throw HttpError.badRequest(
      `response_format ${JSON.stringify(format)} is not supported: this server has no guided (JSON) decoding`,
      "response_format.type",
    );
  }
}

const NO_TOOL_CALLS = "this server does not parse tool calls from the output";

/**
 * Tool calling is refused until the server parses tool calls: a client that
 * offers tools would otherwise get plain text where it expects tool calls.
 * What clients send when they use no tools (no or empty `tools`, `tool_choice`
 * "none", or "auto" with nothing to choose from) is served.
 */
function refuseToolCalling(body: ChatCompletionRequest): void {
  const offered = (list: unknown[] | null | undefined): boolean => Array.isArray(list) && list.length > 0;
  if (offered(body.tools)) throw HttpError.badRequest(`tools are not supported: ${NO_TOOL_CALLS}`, "tools");
  if (offered(body.functions)) throw HttpError.badRequest(`functions are not supported: ${NO_TOOL_CALLS}`, "functions");
  for (const param of ["tool_choice", "function_call"] as const) {
    const choice = body[param];
    if (choice === undefined || choice === null || choice === "none" || choice === "auto") continue;
    throw HttpError.badRequest(
      `${param} ${JSON.stringify(choice)} is not supported: ${NO_TOOL_CALLS} (only "none" and "auto" without tools)`,
      param,
    );
  }
}

async function planChat(context: RouteContext, body: ChatCompletionRequest, signal: AbortSignal): Promise<RequestPlan> {
  const entry = lookup(context, body.model);
  refuseUnsupported(body);
  refuseToolCalling(body);
  if (body.top_logprobs !== undefined && body.top_logprobs !== null && !body.logprobs) {
    throw HttpError.badRequest("top_logprobs requires logprobs to be true", "top_logprobs");
  }
  const { request, stopStrings } = await entry.pipeline.preprocessChat(body, { signal });
  const id = newId("chatcmpl");
  return {
    kind: "chat",
    entry,
    choices: expandChoices(request, body.n ?? 1, 0),
    promptTokens: request.tokenIds.length,
    stopStrings,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    logprobs: body.logprobs ? (body.top_logprobs ?? 0) : undefined,
    id,
    created: Math.floor(Date.now() / 1000),
    migration: migrationFor(context, entry, body.n ?? 1, id),
  };
}

async function planCompletion(
  context: RouteContext,
  body: CompletionRequest,
  signal: AbortSignal,
): Promise<RequestPlan> {
  const entry = lookup(context, body.model);
  if (body.echo) throw HttpError.badRequest("echo is not supported", "echo");
  if (body.suffix !== undefined && body.suffix !== null && body.suffix !== "") {
    throw HttpError.badRequest("suffix is not supported: this server has no fill-in-the-middle completion", "suffix");
  }
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) {
    throw HttpError.badRequest("best_of is not supported (as in vLLM V1): use n with logprobs", "best_of");
  }
  refuseUnsupported(body);
  const prompts = normalizePrompts(body.prompt);
  const n = body.n ?? 1;
  const choices: ChoiceSpec[] = [];
  let promptTokens = 0;
  let stops: string[] = [];
  for (const [promptIndex, prompt] of prompts.entries()) {
    const { request, stopStrings } = await entry.pipeline.preprocessCompletion(body, prompt, { signal });
    stops = stopStrings;
    promptTokens += request.tokenIds.length;
    choices.push(...expandChoices(request, n, promptIndex * n));
  }
  const id = newId("cmpl");
  return {
    kind: "completion",
    entry,
    choices,
    promptTokens,
    stopStrings: stops,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    logprobs: body.logprobs ?? undefined,
    id,
    created: Math.floor(Date.now() / 1000),
    migration: migrationFor(context, entry, n, id),
  };
}

function normalizePrompts(prompt: CompletionRequest["prompt"]): (string | number[])[] {
  if (typeof prompt === "string") return [prompt];
  if (prompt.length > 0 && typeof prompt[0] === "number") return [prompt as number[]];
  return prompt as (string | number[])[];
}

async function serve(
  context: RouteContext,
  request: FastifyRequest,
  reply: FastifyReply,
  plan: RequestPlan,
): Promise<unknown> {
  const { metrics } = context;
  const model = plan.entry.name;
  const endpoint = plan.kind === "chat" ? "chat_completions" : "completions";
  const arrivedAt = performance.now();
  const totals: ChoiceTotals = { completionTokens: 0, cachedTokens: 0, firstTokenAt: undefined, tokenTimes: [] };
  const clientGone = new AbortController();
  // Cancels the request down to the engine: the client left, or shutdown's grace ended.
  const cancel = new AbortController();
  reply.raw.on("close", () => {
    if (reply.raw.writableFinished) return;
    clientGone.abort();
    cancel.abort();
  });
  const onShutdown = (): void => cancel.abort(SHUTTING_DOWN);
  if (context.shutdown.aborted) onShutdown();
  else context.shutdown.addEventListener("abort", onShutdown, { once: true });
  metrics.inflight.inc({ model });
  let status = "success";
  try {
    if (plan.stream) {
      await streamResponse(
        plan,
        reply,
        context.logger,
        { cancel: cancel.signal, clientGone: clientGone.signal },
        totals,
      );
      if (clientGone.signal.aborted) {
        status = "disconnected";
        metrics.disconnects.inc({ model });
      } else if (context.shutdown.aborted) {
        status = "error";
      }
      return reply;
    }
    const body = await unaryResponse(plan, cancel.signal, totals);
    if (context.shutdown.aborted && !clientGone.signal.aborted) throw SHUTTING_DOWN;
    void reply.headers(decisionHeaders(totals));
    return body;
  } catch (err) {
    status = "error";
    throw err;
  } finally {
    context.shutdown.removeEventListener("abort", onShutdown);
    metrics.inflight.dec({ model });
    metrics.requests.inc({ model, endpoint, request_type: plan.stream ? "stream" : "unary", status });
    metrics.requestDuration.observe({ model }, (performance.now() - arrivedAt) / 1000);
    metrics.inputSequenceTokens.observe({ model }, plan.promptTokens);
    metrics.inputTokens.inc({ model }, plan.promptTokens);
    metrics.outputSequenceTokens.observe({ model }, totals.completionTokens);
    metrics.outputTokens.inc({ model }, totals.completionTokens);
    if (totals.cachedTokens > 0) metrics.cachedTokens.inc({ model }, totals.cachedTokens);
    if (totals.firstTokenAt !== undefined) {
      metrics.timeToFirstToken.observe({ model }, (totals.firstTokenAt - arrivedAt) / 1000);
    }
    const times = totals.tokenTimes;
    for (let i = 1; i < times.length; i++) {
      metrics.interTokenLatency.observe({ model }, ((times[i] as number) - (times[i - 1] as number)) / 1000);
    }
    void request;
  }
}

/**
 * `x-tdist-worker`: the instance the (first choice of the) request went to, under every router;
 * `x-tdist-cached-blocks`: what an LLM router expected that worker to hold;
 * `x-tdist-prefill-worker`: the prefill worker, when the prompt was prefilled on one.
 */
function decisionHeaders(totals: ChoiceTotals): Record<string, string> {
  const decision = totals.decision;
  const headers: Record<string, string> = decision
    ? { [WORKER_HEADER]: decision.workerId, [CACHED_BLOCKS_HEADER]: String(decision.cachedBlocks) }
    : totals.workerId === undefined
      ? {}
      : { [WORKER_HEADER]: totals.workerId };
  if (totals.prefillWorkerId !== undefined) headers[PREFILL_WORKER_HEADER] = totals.prefillWorkerId;
  return headers;
}

function usageOf(plan: RequestPlan, totals: ChoiceTotals): Usage {
  return {
    prompt_tokens: plan.promptTokens,
    completion_tokens: totals.completionTokens,
    total_tokens: plan.promptTokens + totals.completionTokens,
    ...(totals.cachedTokens > 0 ? { prompt_tokens_details: { cached_tokens: totals.cachedTokens } } : {}),
  };
}

/**
 * One SSE chunk for one (possibly coalesced) choice event, as JSON text. The
 * constant head of every chunk is serialised once per request; only the
 * choice's fields are serialised per event (this runs once per token).
 */
function chunkWriter(
  plan: RequestPlan,
  base: { id: string; created: number; model: string },
): (event: ChoiceEvent) => string {
  const pipeline = plan.entry.pipeline;
  const object = plan.kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const head = `{"id":${JSON.stringify(base.id)},"object":"${object}","created":${base.created},"model":${JSON.stringify(base.model)},"choices":[{"index":`;
  const tail = plan.includeUsage ? '}],"usage":null}' : "}]}";
  return (event) => {
    const finish = event.finishReason ? `"${event.finishReason}"` : "null";
    if (plan.kind === "chat") {
      const delta = event.text ? `{"content":${JSON.stringify(event.text)}}` : "{}";
      const logprobs =
        plan.logprobs === undefined ? "null" : JSON.stringify({ content: chatLogprobs(pipeline, event.logprobs) });
      return `${head}${event.index},"delta":${delta},"finish_reason":${finish},"logprobs":${logprobs}${tail}`;
    }
    const logprobs =
      plan.logprobs === undefined ? "null" : JSON.stringify(completionLogprobs(pipeline, event.logprobs, 0));
    return `${head}${event.index},"text":${JSON.stringify(event.text)},"finish_reason":${finish},"logprobs":${logprobs}${tail}`;
  };
}

/** The client-facing error a choice ended with, if it ended with one. */
function errorOf(event: ChoiceEvent, model: string): HttpError | undefined {
  if (event.engineError !== undefined) {
    // The engine's own words about the request (not a transport's internal addresses).
    return new HttpError(
      500,
      `the engine serving model ${JSON.stringify(model)} failed: ${event.engineError}`,
      "internal_server_error",
      null,
      "engine_error",
    );
  }
  return event.error === undefined ? undefined : toHttpError(event.error, model);
}

async function streamResponse(
  plan: RequestPlan,
  reply: FastifyReply,
  logger: Logger,
  { cancel, clientGone }: { cancel: AbortSignal; clientGone: AbortSignal },
  totals: ChoiceTotals,
): Promise<void> {
  const base = { id: plan.id, created: plan.created, model: plan.entry.name };
  const chunkOf = chunkWriter(plan, base);
  let sse: SseWriter | undefined;
  // Commits to a 200 on the first event, so failures before it get a proper HTTP error.
  const start = (): SseWriter => {
    reply.hijack();
    const writer = new SseWriter(reply.raw);
    writer.start(decisionHeaders(totals));
    if (plan.kind === "chat") {
      for (const choice of plan.choices) {
        const chunk: ChatCompletionChunk = {
          ...base,
          object: "chat.completion.chunk",
          choices: [
            { index: choice.index, delta: { role: "assistant", content: "" }, finish_reason: null, logprobs: null },
          ],
        };
        writer.send(chunk);
      }
    }
    return writer;
  };
  // Events are queued as they are decoded and written once per turn; only a slow client makes a choice wait.
  await runChoices(
    plan.entry,
    plan.choices,
    plan.stopStrings,
    cancel,
    totals,
    (event) => {
      if (clientGone.aborted) return;
      sse ??= start();
      sse.sendJson(chunkOf(event));
      const error = errorOf(event, plan.entry.name);
      if (error) {
        logHttpError(logger, error, plan.entry.name);
        sse.send(error.body());
      }
    },
    () => sse?.backpressure,
    plan.migration,
  );
  sse ??= start();
  if (sse.closed.aborted || clientGone.aborted) {
    sse.end();
    return;
  }
  if (cancel.aborted && cancel.reason === SHUTTING_DOWN) sse.send(SHUTTING_DOWN.body());
  if (plan.includeUsage) {
    sse.send({
      ...base,
      object: plan.kind === "chat" ? "chat.completion.chunk" : "text_completion",
      choices: [],
      usage: usageOf(plan, totals),
    });
  }
  sse.done();
}

async function unaryResponse(
  plan: RequestPlan,
  clientGone: AbortSignal,
  totals: ChoiceTotals,
): Promise<ChatCompletionResponse | CompletionResponse> {
  const texts = new Map<number, string[]>();
  const reasons = new Map<number, OpenAIFinishReason>();
  const logprobs = new Map<number, TokenLogprob[]>();
  await runChoices(
    plan.entry,
    plan.choices,
    plan.stopStrings,
    clientGone,
    totals,
    (event) => {
      let parts = texts.get(event.index);
      if (!parts) {
        parts = [];
        texts.set(event.index, parts);
      }
      if (event.text) parts.push(event.text);
      if (event.logprobs) {
        let entries = logprobs.get(event.index);
        if (!entries) {
          entries = [];
          logprobs.set(event.index, entries);
        }
        entries.push(...event.logprobs);
      }
      if (event.finishReason) reasons.set(event.index, event.finishReason);
    },
    undefined,
    plan.migration,
  );
  const pipeline = plan.entry.pipeline;
  const base = { id: plan.id, created: plan.created, model: plan.entry.name, usage: usageOf(plan, totals) };
  const indexes = plan.choices.map((choice) => choice.index);
  if (plan.kind === "chat") {
    return {
      ...base,
      object: "chat.completion",
      choices: indexes.map((index) => ({
        index,
        message: { role: "assistant", content: (texts.get(index) ?? []).join("") },
        finish_reason: reasons.get(index) ?? "stop",
        logprobs: plan.logprobs === undefined ? null : { content: chatLogprobs(pipeline, logprobs.get(index)) },
      })),
    };
  }
  return {
    ...base,
    object: "text_completion",
    choices: indexes.map((index) => ({
      index,
      text: (texts.get(index) ?? []).join(""),
      finish_reason: reasons.get(index) ?? "stop",
      logprobs: plan.logprobs === undefined ? null : completionLogprobs(pipeline, logprobs.get(index), 0),
    })),
  };
}

function tokenBytes(text: string): number[] {
  return [...Buffer.from(text, "utf8")];
}

function chatLogprobs(pipeline: ModelPipeline, logprobs: TokenLogprob[] | undefined): ChatLogprobContent[] {
  return (logprobs ?? []).map((entry) => {
    const token = pipeline.tokenText(entry.tokenId);
    return {
      token,
      logprob: entry.logprob,
      bytes: tokenBytes(token),
      top_logprobs: (entry.top ?? []).map((alt) => {
        const text = pipeline.tokenText(alt.tokenId);
        return { token: text, logprob: alt.logprob, bytes: tokenBytes(text) };
      }),
    };
  });
}

function completionLogprobs(
  pipeline: ModelPipeline,
  logprobs: TokenLogprob[] | undefined,
  startOffset: number,
): CompletionLogprobs {
  const tokens: string[] = [];
  const tokenLogprobs: number[] = [];
  const top: Record<string, number>[] = [];
  const offsets: number[] = [];
  let offset = startOffset;
  for (const entry of logprobs ?? []) {
    const text = pipeline.tokenText(entry.tokenId);
    tokens.push(text);
    tokenLogprobs.push(entry.logprob);
    offsets.push(offset);
    offset += text.length;
    top.push(Object.fromEntries((entry.top ?? []).map((alt) => [pipeline.tokenText(alt.tokenId), alt.logprob])));
  }
  return { tokens, token_logprobs: tokenLogprobs, top_logprobs: top, text_offset: offsets };
}
