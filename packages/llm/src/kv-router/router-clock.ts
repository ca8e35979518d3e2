/**
 * Where routers read time (ms; only differences matter). The default is the
 * wall clock; simulations pass their virtual clock so TTLs and latencies
 * follow simulated time. `MockerClock` from `@tdist/engine-mocker` fits.
 */
export interface RouterClock {
  now(): number;
}

export const systemRouterClock: RouterClock = { now: () => performance.now() };
