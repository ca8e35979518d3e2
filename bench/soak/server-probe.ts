import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { request } from "node:http";

/** The server process's resident set in MB, from the kernel (`VmRSS`), not from the process's own report. */
export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** How many of the process's file descriptors are sockets (listeners, connections, IPC). */
export function openSockets(pid: number): number {
  let sockets = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) sockets++;
    } catch {
      // Closed between the listing and the read.
    }
  }
  return sockets;
}

/** The unlabelled samples of a Prometheus text exposition, by name. */
export function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$/.exec(line);
    if (match) samples.set(match[1] as string, Number(match[2]));
  }
  return samples;
}

export interface ProcessMetrics {
  activeHandles: number;
  /** Since the previous scrape: prom-client resets its event-loop histogram on every read. */
  eventLoopLagP99Ms: number;
  heapUsedMb: number;
}

/**
 * Reads the server's `/metrics` on a connection of its own, closed after the
 * answer, so no socket of the scrape outlives it. Resets the server's
 * event-loop lag window.
 */
export function scrapeProcessMetrics(origin: string, timeoutMs: number): Promise<ProcessMetrics> {
  const url = new URL("/metrics", origin);
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { connection: "close" } }, (res) => {
      res.setEncoding("utf8");
      let text = "";
      res.on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () => {
        const samples = parseMetrics(text);
        const read = (name: string): number => {
          const value = samples.get(name);
          if (value === undefined) throw new Error(`/metrics has no ${name}`);
          return value;
        };
        try {
          resolve({
            activeHandles: read("nodejs_active_handles_total"),
            eventLoopLagP99Ms: read("nodejs_eventloop_lag_p99_seconds") * 1000,
            heapUsedMb: read("nodejs_heap_size_used_bytes") / 1024 / 1024,
          });
        } catch (error) {
          reject(error);
        }
      });
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`/metrics did not answer in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}
