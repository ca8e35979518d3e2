import { delay, withTimeout } from "@tdist/runtime";
import { type EtcdServer, type NatsServer, NodeProcess } from "@tdist/testkit";

const CLI = "packages/cli/dist/main.js";

export type ChaosEngine = "mocker" | "llamacpp";
export type ChaosRequestPlane = "tcp" | "nats";

export interface ChaosClusterOptions {
  etcd: EtcdServer;
  nats: NatsServer;
  engine: ChaosEngine;
  workers: number;
  /** Unique per cluster, so a scenario never sees another's workers (namespace and model name). */
  name: string;
  requestPlane: ChaosRequestPlane;
  /** The workers' `--migration-limit` (in their model card); absent: the default. */
  migrationLimit?: number;
  /** Milliseconds for startup, per process. */
  startTimeoutMs: number;
  /** More environment for every process of the cluster. */
  extraEnv?: Record<string, string>;
}

export interface ChaosWorker {
  /** Index in the cluster, for reports. */
  index: number;
  process: NodeProcess;
  /** The instance id the frontend names in `x-tdist-worker`. */
  instanceId: string;
}

/**
 * A frontend and `workers` workers as separate CLI processes on shared etcd
 * and NATS: the KV router (its events over NATS), the chosen request plane,
 * a short lease TTL so a dead worker's card leaves discovery within seconds.
 */
export class ChaosCluster {
  readonly workers: ChaosWorker[] = [];
  readonly model: string;
  private readonly processes: NodeProcess[] = [];
  private frontendUrl = "";

  private constructor(private readonly options: ChaosClusterOptions) {
    this.model = `chaos-${options.name}`;
  }

  static async start(options: ChaosClusterOptions): Promise<ChaosCluster> {
    const cluster = new ChaosCluster(options);
    try {
      await cluster.startProcesses();
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  /** `http://host:port` of the frontend. */
  get url(): string {
    return this.frontendUrl;
  }

  workerByInstance(instanceId: string): ChaosWorker | undefined {
    return this.workers.find((w) => w.instanceId === instanceId);
  }

  /** Live workers the frontend counts for the model, from `/health`. */
  async liveWorkers(signal?: AbortSignal): Promise<number> {
    const response = await fetch(`${this.frontendUrl}/health`, { signal: signal ?? AbortSignal.timeout(5_000) });
    const body = (await response.json()) as { models?: { name: string; live_workers: number }[] };
    return body.models?.find((m) => m.name === this.model)?.live_workers ?? 0;
  }

  /** Waits until the frontend routes to `count` live workers. */
  async waitForLiveWorkers(count: number, timeoutMs: number): Promise<void> {
    await withTimeout(`${count} live workers of ${this.model}`, timeoutMs, undefined, async () => {
      while ((await this.liveWorkers().catch(() => -1)) !== count) await delay(100);
    });
  }

  /** The tail of every process's output, for a failed scenario's report. */
  outputTails(chars = 1_500): Record<string, string> {
    const tails: Record<string, string> = {};
    for (const p of this.processes) tails[p.options.name] = p.output.slice(-chars);
    return tails;
  }

  async stop(): Promise<void> {
    for (const w of this.workers) if (w.process.pid !== undefined && w.process.running) resume(w.process);
    await Promise.all(this.processes.map((p) => p.terminate(3_000).catch(() => undefined)));
  }

  private env(): Record<string, string> {
    return {
      TDIST_LEASE_TTL_MS: "2000",
      TDIST_LOG_LEVEL: "warn",
      TDIST_LOG_FORMAT: "json",
      TDIST_NAMESPACE: this.model,
      TDIST_SHUTDOWN_GRACE_MS: "1000",
      ...this.options.extraEnv,
    };
  }

  private spawn(name: string, args: string[]): NodeProcess {
    const { etcd, nats } = this.options;
    const child = new NodeProcess({
      name,
      script: CLI,
      args: [...args, "--discovery", "etcd", "--etcd-endpoints", etcd.endpoint, "--nats-url", nats.url],
      env: this.env(),
    });
    this.processes.push(child);
    return child;
  }

  private async startProcesses(): Promise<void> {
    const { engine, startTimeoutMs } = this.options;
    const frontend = this.spawn("frontend", ["frontend", "--port", "0", "--host", "127.0.0.1", "--router-mode", "kv"]);
    const [, url] = await frontend.waitForOutput(/tdist frontend at (http:\/\/[^\s]+)\/v1/, startTimeoutMs);
    this.frontendUrl = url as string;
    const started: Promise<void>[] = [];
    for (let index = 0; index < this.options.workers; index++) {
      const args = [
        "worker",
        "--engine",
        engine,
        "--model-name",
        this.model,
        "--request-plane",
        this.options.requestPlane,
        ...(this.options.migrationLimit === undefined
          ? []
          : ["--migration-limit", String(this.options.migrationLimit)]),
        // Small enough for four workers on a few cores; the tiny model needs no more.
        ...(engine === "llamacpp" ? ["--threads", "1", "--sequences", "8"] : []),
      ];
      const process = this.spawn(`worker-${index}`, args);
      started.push(
        process.waitForOutput(/\{"event":"worker-ready".*\}/, startTimeoutMs).then(([line]) => {
          const ready = JSON.parse(line) as { instanceId: string };
          this.workers.push({ index, process, instanceId: ready.instanceId });
        }),
      );
    }
    await Promise.all(started);
    this.workers.sort((a, b) => a.index - b.index);
    await this.waitForLiveWorkers(this.options.workers, startTimeoutMs);
  }
}

/** SIGCONT, so a stopped process can be terminated. */
export function resume(process: NodeProcess): void {
  try {
    process.signal("SIGCONT");
  } catch {
    // already gone
  }
}
