/**
 * @tdist/engine-echo: a test engine that streams the prompt's token ids back,
 * honouring the request's stop conditions and both cancellation levels.
 *
 * ```ts
 * import { createEchoEngine } from "@tdist/engine-echo";
 *
 * const endpoint = runtime.namespace("tdist").component("backend").endpoint("generate");
 * await endpoint.serve(createEchoEngine({ delayMsPerToken: 10 }));
 * ```
 */
export { createEchoEngine, type EchoEngineHandler, type EchoEngineOptions } from "./echo-engine.js";
export { type EchoWorkerOptions, serveEchoWorker } from "./serve-echo-worker.js";
