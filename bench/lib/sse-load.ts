import { Agent, request } from "node:http";

export interface StreamSample {
  /** ms from sending the request to the first content event. */
  ttftMs: number;
  /** Tokens received: the final usage chunk's completion_tokens (events may carry several tokens). */
  tokens: number;
  ok: boolean;
}

/**
 * A small closed-loop load generator for SSE endpoints: `concurrency`
 * workers each send requests back to back for `durationMs`, over keep-alive
 * connections, and count the `data:` events of every stream.
 */
export async function runSseLoad(options: {
  url: string;
  body: string;
  concurrency: number;
  durationMs: number;
}): Promise<{ samples: StreamSample[]; seconds: number }> {
  const target = new URL(options.url);
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const samples: StreamSample[] = [];
  const start = performance.now();
  const deadline = start + options.durationMs;
  const one = (): Promise<StreamSample> =>
    new Promise((resolve) => {
      const sentAt = performance.now();
      let ttftMs = -1;
      let tokens = 0;
      let pending = "";
      const req = request(
        {
          host: target.hostname,
          port: target.port,
          path: target.pathname,
          method: "POST",
          agent,
          headers: { "content-type": "application/json", "content-length": Buffer.byteLength(options.body) },
        },
        (res) => {
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            pending += chunk;
            let at = pending.indexOf("\n\n");
            while (at >= 0) {
              const event = pending.slice(0, at);
              pending = pending.slice(at + 2);
              if (ttftMs < 0 && event.includes('"text":"') && !event.includes('"text":""')) {
                ttftMs = performance.now() - sentAt;
              }
              const usage = /"completion_tokens":(\d+)/.exec(event);
              if (usage) tokens = Number(usage[1]);
              at = pending.indexOf("\n\n");
            }
          });
          res.on("end", () => resolve({ ttftMs, tokens, ok: res.statusCode === 200 }));
          res.on("error", () => resolve({ ttftMs, tokens, ok: false }));
        },
      );
      req.on("error", () => resolve({ ttftMs, tokens, ok: false }));
      req.end(options.body);
    });
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (performance.now() < deadline) samples.push(await one());
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  agent.destroy();
  return { samples, seconds };
}

/** Opens `count` streams at once and holds them open until `release` resolves. */
export async function holdStreams(
  url: string,
  body: string,
  count: number,
  release: Promise<void>,
  onOpened: (opened: number) => void = () => {},
): Promise<number> {
  const target = new URL(url);
  const agent = new Agent({ keepAlive: false, maxSockets: count });
  let opened = 0;
  const requests = Array.from(
    { length: count },
    () =>
      new Promise<void>((resolve) => {
        const req = request(
          {
            host: target.hostname,
            port: target.port,
            path: target.pathname,
            method: "POST",
            agent,
            headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
          },
          (res) => {
            res.once("data", () => onOpened(++opened));
            res.on("data", () => {});
            res.on("end", resolve);
            res.on("error", () => resolve());
            void release.then(() => req.destroy());
          },
        );
        req.on("error", () => resolve());
        req.on("close", () => resolve());
        req.end(body);
      }),
  );
  await Promise.race([release, Promise.all(requests)]);
  agent.destroy();
  return opened;
}
