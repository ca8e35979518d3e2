import { DistributedRuntime, MemoryDiscoveryStore, type RuntimeOptions } from "@tdist/runtime";

export interface InProcessCluster extends AsyncDisposable {
  readonly store: MemoryDiscoveryStore;
  readonly runtimes: DistributedRuntime[];
  /** Adds one more runtime to the cluster. */
  add(options?: RuntimeOptions): Promise<DistributedRuntime>;
  shutdown(): Promise<void>;
}

/**
 * Several runtimes in one process sharing one memory discovery store and
 * talking over real TCP sockets: a "cluster" for tests, with no servers.
 */
export async function startInProcessCluster(size: number, options: RuntimeOptions = {}): Promise<InProcessCluster> {
  const store = new MemoryDiscoveryStore();
  const runtimes: DistributedRuntime[] = [];
  const add = async (extra: RuntimeOptions = {}): Promise<DistributedRuntime> => {
    const runtime = await DistributedRuntime.create({
      env: {},
      shutdownGraceMs: 2_000,
      ...options,
      ...extra,
      discovery: { kind: "memory", store },
    });
    runtimes.push(runtime);
    return runtime;
  };
  for (let i = 0; i < size; i++) await add();
  const shutdown = async (): Promise<void> => {
    await Promise.all(runtimes.map((runtime) => runtime.shutdown({ graceMs: 500 })));
  };
  return { store, runtimes, add, shutdown, [Symbol.asyncDispose]: shutdown };
}
