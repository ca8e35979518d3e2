import { request } from "node:https";
import { Readable } from "node:stream";

/**
 * A `fetch` that trusts `ca` (a private CA's PEM) for https URLs, for the
 * openai client in tests: the built-in fetch only reads extra CAs
 * (NODE_EXTRA_CA_CERTS) when the process starts.
 */
export function fetchTrusting(ca: string): typeof fetch {
  return (input, init) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const headers = Object.fromEntries(new Headers(init?.headers).entries());
      const req = request(
        url,
        { method: init?.method ?? "GET", headers, ca, ...(init?.signal ? { signal: init.signal } : {}) },
        (res) => {
          const responseHeaders = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            if (typeof value === "string") responseHeaders.set(name, value);
          }
          const body = Readable.toWeb(res) as ReadableStream<Uint8Array>;
          resolve(new Response(body, { status: res.statusCode ?? 0, headers: responseHeaders }));
        },
      );
      req.on("error", reject);
      req.end(typeof init?.body === "string" ? init.body : undefined);
    });
}
