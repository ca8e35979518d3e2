import { type ChildProcess, spawn } from "node:child_process";
import { type Agent, request } from "node:http";
import type { GenerationSample } from "./direct.js";

/**
 * One streaming `/v1/completions` request: TTFT is the time from sending
 * it to the first SSE event (every event of a completion stream carries at
 * least one token), tokens the final usage chunk's `completion_tokens`.
 */
export function streamCompletion(
  url: URL,
  agent: Agent,
  body: Record<string, unknown>,
): Promise<GenerationSample & { promptTokens: number }> {
  const payload = JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } });
  return new Promise((resolve) => {
    const sentAt = performance.now();
    let ttftMs = -1;
    let tokens = 0;
    let promptTokens = 0;
    let pending = "";
    const finish = (ok: boolean): void => resolve({ ttftMs, tokens, promptTokens, ok });
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
      },
      (res) => {
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          if (ttftMs < 0) ttftMs = performance.now() - sentAt;
          pending += chunk;
          let at = pending.indexOf("\n\n");
          while (at >= 0) {
            const event = pending.slice(0, at);
            pending = pending.slice(at + 2);
            if (event.includes('"usage"') && event.startsWith("data: ")) {
              const usage = (
                JSON.parse(event.slice(6)) as { usage?: { prompt_tokens: number; completion_tokens: number } }
              ).usage;
              if (usage) {
                promptTokens = usage.prompt_tokens;
                tokens = usage.completion_tokens;
              }
            }
            at = pending.indexOf("\n\n");
          }
        });
        res.on("end", () => finish(res.statusCode === 200));
        res.on("error", () => finish(false));
      },
    );
    req.on("error", () => finish(false));
    req.end(payload);
  });
}

/** Starts `node <args>` and waits for a line of its output matching `ready`. */
export async function startChild(
  args: string[],
  ready: RegExp,
  timeoutMs: number,
): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TDIST_LOG_LEVEL: "warn" },
  });
  let output = "";
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`child not ready after ${timeoutMs} ms: ${output}`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const found = output.match(ready);
      if (found) {
        clearTimeout(timer);
        resolve(found);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`child exited ${code}: ${output}`));
    });
  });
  return { child, match };
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}
