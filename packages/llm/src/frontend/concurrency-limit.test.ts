import { describe, expect, it } from "vitest";
import { ConcurrencyLimit } from "./concurrency-limit.js";

describe("concurrency limit", () => {
  it("concurrency limit - admits up to the cap, refuses the next, and a release (counted once) frees a slot", () => {
    const limit = new ConcurrencyLimit(2);
    const first = limit.tryEnter();
    const second = limit.tryEnter();
    expect(first).toBeTypeOf("function");
    expect(second).toBeTypeOf("function");
    expect(limit.tryEnter()).toBeUndefined();
    first?.();
    first?.();
    expect(limit.active).toBe(1);
    expect(limit.tryEnter()).toBeTypeOf("function");
    expect(limit.tryEnter()).toBeUndefined();
  });

  it("concurrency limit - the refusal is a 429 too_many_requests; a cap below 1 is an invalid option", () => {
    const refusal = new ConcurrencyLimit(3).refusal();
    expect(refusal.statusCode).toBe(429);
    expect(refusal.body().error.code).toBe("too_many_requests");
    expect(() => new ConcurrencyLimit(0)).toThrow(expect.objectContaining({ code: "invalid_option" }));
    expect(() => new ConcurrencyLimit(1.5)).toThrow(expect.objectContaining({ code: "invalid_option" }));
  });
});
