import { TdistError } from "../errors/tdist-error.js";
import type { Instance } from "./instance.js";
import { type Route, routeTo } from "./route.js";

/** What a policy may know when it picks: per-instance load as seen by this client. */
export interface PickContext {
  /** Streams this client has open to the instance. */
  inFlight(instanceId: string): number;
  /** The request being routed (for content-aware policies such as the KV router). */
  readonly request: unknown;
  /**
   * Instances this request must not go to (say, one that just failed it).
   * The client has already removed them from `instances`; a policy with
   * bookkeeping of its own reads the set to know why they are missing.
   */
  readonly exclude: ReadonlySet<string>;
}

/**
 * A routing policy: picks one instance among the live ones (sorted by id)
 * and returns its {@link Route}. Return undefined when none fits (the
 * request fails with `no_instances`); throw a TdistError to fail the request.
 *
 * ```ts
 * const firstOnly: RouterPolicy = { name: "first", pick: (instances) => routeTo(instances[0]) };
 * client.generate(req, { router: firstOnly });
 * ```
 */
export interface RouterPolicy<D = unknown> {
  readonly name: string;
  pick(instances: readonly Instance[], context: PickContext): Route<D> | undefined;
}

/** An empty exclusion set, shared by every request that names none. */
export const NO_EXCLUSIONS: ReadonlySet<string> = new Set<string>();

export type RouterMode = "round-robin" | "random" | "least-loaded" | "power-of-two";

export function roundRobin(): RouterPolicy {
  let counter = 0;
  return {
    name: "round-robin",
    pick(instances) {
      if (instances.length === 0) return undefined;
      const chosen = instances[counter % instances.length];
      counter = (counter + 1) % 0x7fffffff;
      return routeTo(chosen);
    },
  };
}

export function random(rng: () => number = Math.random): RouterPolicy {
  return {
    name: "random",
    pick: (instances) => routeTo(instances[Math.floor(rng() * instances.length)]),
  };
}

/** Routes to the named instance only; an unknown id is an `instance_not_found` error. */
export function direct(instanceId: string): RouterPolicy {
  return {
    name: `direct(${instanceId})`,
    pick(instances) {
      const chosen = instances.find((instance) => instance.instanceId === instanceId);
      if (chosen === undefined) throw new TdistError("instance_not_found", `instance ${instanceId} is not registered`);
      return routeTo(chosen);
    },
  };
}

/** Fewest streams in flight from this client; ties go round-robin. */
export function leastLoaded(): RouterPolicy {
  let counter = 0;
  return {
    name: "least-loaded",
    pick(instances, context) {
      if (instances.length === 0) return undefined;
      const offset = counter++ % instances.length;
      let best: Instance | undefined;
      let bestLoad = Number.POSITIVE_INFINITY;
      for (let i = 0; i < instances.length; i++) {
        const instance = instances[(offset + i) % instances.length] as Instance;
        const load = context.inFlight(instance.instanceId);
        if (load < bestLoad) {
          best = instance;
          bestLoad = load;
        }
      }
      return routeTo(best);
    },
  };
}

/** Two random choices, keep the less loaded: near least-loaded balance without herding. */
export function powerOfTwo(rng: () => number = Math.random): RouterPolicy {
  return {
    name: "power-of-two",
    pick(instances, context) {
      if (instances.length <= 1) return routeTo(instances[0]);
      const first = Math.floor(rng() * instances.length);
      let second = Math.floor(rng() * (instances.length - 1));
      if (second >= first) second++;
      const a = instances[first] as Instance;
      const b = instances[second] as Instance;
      return routeTo(context.inFlight(b.instanceId) < context.inFlight(a.instanceId) ? b : a);
    },
  };
}

export function routerForMode(mode: RouterMode): RouterPolicy {
  switch (mode) {
    case "round-robin":
      return roundRobin();
    case "random":
      return random();
    case "least-loaded":
      return leastLoaded();
    case "power-of-two":
      return powerOfTwo();
    default:
      throw new TdistError("invalid_option", `unknown router mode ${JSON.stringify(mode)}`);
  }
}

export const routers = { roundRobin, random, direct, leastLoaded, powerOfTwo, forMode: routerForMode };
