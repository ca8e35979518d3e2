import type { Client, DistributedRuntime, Handler, ServedEndpoint } from "@tdist/runtime";
import { delay } from "@tdist/runtime";

export interface HelloRequest {
  text: string;
  /** Pause between words, to make streaming visible. */
  delayMs?: number;
}

export interface HelloResponse {
  word: string;
  /** Which instance produced the word (shows round-robin across servers). */
  instanceId: string;
}

export const NAMESPACE = "hello";
export const COMPONENT = "greeter";
export const ENDPOINT = "generate";

/** Streams the words back, capitalising the first: "hello world" → "Hello", "world". */
export function helloHandler(instanceId: () => string): Handler<HelloRequest, HelloResponse> {
  return async function* (request, ctx) {
    if (typeof request?.text !== "string") throw new Error("request.text must be a string");
    const words = request.text.split(/\s+/).filter((word) => word.length > 0);
    for (const [index, word] of words.entries()) {
      if (ctx.isStopped) return;
      if (request.delayMs) await delay(request.delayMs, ctx.signal);
      yield { word: index === 0 ? word[0]?.toUpperCase() + word.slice(1) : word, instanceId: instanceId() };
    }
  };
}

export async function serveHelloWorld(runtime: DistributedRuntime): Promise<ServedEndpoint> {
  const endpoint = runtime.namespace(NAMESPACE).component(COMPONENT).endpoint(ENDPOINT);
  return endpoint.serve(helloHandler(() => runtime.instanceId ?? "unknown"));
}

export async function helloClient(runtime: DistributedRuntime): Promise<Client<HelloRequest, HelloResponse>> {
  return runtime.namespace(NAMESPACE).component(COMPONENT).endpoint(ENDPOINT).client<HelloRequest, HelloResponse>();
}
