import { describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import type { Instance } from "./instance.js";
import { routeTo } from "./route.js";
import { direct, leastLoaded, NO_EXCLUSIONS, powerOfTwo, random, roundRobin, routerForMode } from "./router-policy.js";

const instances: Instance[] = ["a", "b", "c"].map((id) => ({
  instanceId: id,
  namespace: "n",
  component: "c",
  endpoint: "e",
  transport: { tcp: `h:${id.charCodeAt(0)}` },
  metadata: {},
  registeredAt: 0,
}));

function context(load: Record<string, number> = {}) {
  return { inFlight: (id: string) => load[id] ?? 0, request: undefined, exclude: NO_EXCLUSIONS };
}

describe("routers", () => {
  it("router - round-robin cycles in instance order", () => {
    const policy = roundRobin();
    const picks = Array.from({ length: 6 }, () => policy.pick(instances, context())?.instance.instanceId);
    expect(picks).toEqual(["a", "b", "c", "a", "b", "c"]);
  });

  it("router - random stays within the set and covers it", () => {
    const policy = random();
    const seen = new Set(Array.from({ length: 200 }, () => policy.pick(instances, context())?.instance.instanceId));
    expect([...seen].sort()).toEqual(["a", "b", "c"]);
  });

  it("router - direct picks the named instance and rejects unknown ids", () => {
    expect(direct("b").pick(instances, context())?.instance.instanceId).toBe("b");
    expect(() => direct("zz").pick(instances, context())).toThrow(TdistError);
    try {
      direct("zz").pick(instances, context());
    } catch (err) {
      expect((err as TdistError).code).toBe("instance_not_found");
    }
  });

  it("router - least-loaded picks the minimum in-flight", () => {
    expect(leastLoaded().pick(instances, context({ a: 3, b: 1, c: 2 }))?.instance.instanceId).toBe("b");
  });

  it("router - power-of-two never picks the most loaded of three", () => {
    const policy = powerOfTwo();
    for (let i = 0; i < 100; i++) {
      expect(policy.pick(instances, context({ a: 9, b: 0, c: 0 }))?.instance.instanceId).not.toBe("a");
    }
  });

  it("router - empty sets give undefined and unknown modes are invalid_option", () => {
    expect(roundRobin().pick([], context())).toBeUndefined();
    expect(() => routerForMode("fastest" as never)).toThrow(/unknown router mode/);
  });

  it("router - every built-in policy returns a route with no per-request hooks", () => {
    for (const policy of [roundRobin(), random(), direct("a"), leastLoaded(), powerOfTwo()]) {
      const route = policy.pick(instances, context());
      expect(route?.instance).toBe(instances.find((instance) => instance.instanceId === route?.instance.instanceId));
      expect(route?.onFirstResponse).toBeUndefined();
      expect(route?.release).toBeUndefined();
    }
  });

  it("router - routeTo wraps an instance and passes undefined through", () => {
    expect(routeTo(instances[0] as Instance)).toEqual({ instance: instances[0] });
    expect(routeTo(undefined)).toBeUndefined();
  });
});
