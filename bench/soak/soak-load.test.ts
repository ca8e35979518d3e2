import { once } from "node:events";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { runSoakLoad } from "./soak-load.js";
import { soakRequest } from "./soak-requests.js";

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  server?.close();
  if (server) await once(server, "close");
  server = undefined;
});

async function readBody(req: IncomingMessage): Promise<string> {
  let body = "";
  for await (const chunk of req) body += chunk;
  return body;
}

/** Answers unary requests whole; `shortBy` tokens short for the indexes it names. */
async function startServer(shortBy: (prompt: string) => number): Promise<{ origin: string; inFlight: () => number }> {
  let inFlight = 0;
  server = createServer((req, res) => {
    inFlight++;
    res.on("close", () => inFlight--);
    void readBody(req).then((text) => {
      const body = JSON.parse(text) as { max_tokens: number; messages?: { content: string }[]; prompt?: string };
      const prompt = body.prompt ?? body.messages?.map((m) => m.content).join("\n") ?? "";
      // Answers on a later turn, so requests overlap.
      setImmediate(() =>
        res.end(
          JSON.stringify({
            choices: [{ finish_reason: "length" }],
            usage: { completion_tokens: body.max_tokens - shortBy(prompt) },
          }),
        ),
      );
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, inFlight: () => inFlight };
}

const unary = (index: number) => soakRequest(index * 2 + 1, "m");

describe("soak load", () => {
  it("soak load - at a checkpoint nothing is in flight and every request so far has finished", async () => {
    const target = await startServer(() => 0);
    const seen: { finished: number; inFlight: number }[] = [];
    const load = await runSoakLoad({
      origin: target.origin,
      total: 200,
      concurrency: 16,
      build: unary,
      requestTimeoutMs: 5_000,
      checkpoints: [50, 120],
      onCheckpoint: async (finished) => {
        seen.push({ finished, inFlight: target.inFlight() });
      },
      signal: AbortSignal.timeout(10_000),
    });
    expect(load).toMatchObject({ finished: 200, errors: 0 });
    expect(seen).toEqual([
      { finished: 50, inFlight: 0 },
      { finished: 120, inFlight: 0 },
    ]);
  }, 15_000);

  it("soak load - a short answer is counted as an error with its index", async () => {
    const target = await startServer((prompt) => (prompt.includes("Request 7:") ? 1 : 0));
    const load = await runSoakLoad({
      origin: target.origin,
      total: 10,
      concurrency: 4,
      build: unary,
      requestTimeoutMs: 5_000,
      signal: AbortSignal.timeout(10_000),
    });
    expect(load.errors).toBe(1);
    // unary(3) is the soak's request 7.
    expect(load.firstErrors.map((e) => e.index)).toEqual([3]);
  }, 15_000);
});
