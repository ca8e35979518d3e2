/**
 * The baseline: a bare node:http server that answers /v1/completions with
 * the same SSE token stream the frontend produces for the benchmark prompt,
 * with no routing, tokenization or engine in between.
 */
import { createServer as createHttpServer } from "node:http";
import type { AddressInfo } from "node:net";

const tokens: string[] = JSON.parse(process.argv[2] ?? "[]");
const server = createHttpServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    const base = { id: "cmpl-bare", object: "text_completion", created: Math.floor(Date.now() / 1000), model: "echo" };
    let i = 0;
    const pump = (): void => {
      while (i < tokens.length) {
        const last = i === tokens.length - 1;
        const chunk = {
          ...base,
          choices: [{ index: 0, text: tokens[i], finish_reason: last ? "stop" : null, logprobs: null }],
        };
        i++;
        if (!res.write(`data: ${JSON.stringify(chunk)}\n\n`)) {
          res.once("drain", pump);
          return;
        }
      }
      const usage = { prompt_tokens: tokens.length, completion_tokens: tokens.length, total_tokens: 2 * tokens.length };
      res.write(`data: ${JSON.stringify({ ...base, choices: [], usage })}\n\n`);
      res.end("data: [DONE]\n\n");
    };
    pump();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: (server.address() as AddressInfo).port }));
});
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
