import { describe, expect, it } from "vitest";
import { Context } from "./context.js";

describe("context - cancellation", () => {
  it("context - stop is graceful: stopSignal fires, signal does not", () => {
    const ctx = new Context();
    ctx.stopGenerating();
    expect(ctx.isStopped).toBe(true);
    expect(ctx.isKilled).toBe(false);
    expect(ctx.signal.aborted).toBe(false);
  });

  it("context - kill aborts both signals", () => {
    const ctx = new Context();
    ctx.kill();
    expect(ctx.stopSignal.aborted).toBe(true);
    expect(ctx.signal.aborted).toBe(true);
  });

  it("context - a parent's stop and kill reach its children and grandchildren", () => {
    const parent = new Context();
    const child = Context.child(parent);
    const grandchild = Context.child(child);
    parent.stopGenerating();
    expect(grandchild.isStopped).toBe(true);
    expect(grandchild.isKilled).toBe(false);
    parent.kill();
    expect(child.isKilled).toBe(true);
    expect(grandchild.isKilled).toBe(true);
  });

  it("context - a child of a killed parent starts killed; disposed children are detached", () => {
    const parent = new Context();
    const detached = Context.child(parent);
    detached.dispose();
    parent.kill();
    expect(detached.isKilled).toBe(false);
    expect(Context.child(parent).isKilled).toBe(true);
  });

  it("context - killOn links an AbortSignal", () => {
    const controller = new AbortController();
    const ctx = new Context();
    ctx.killOn(controller.signal);
    controller.abort();
    expect(ctx.isKilled).toBe(true);
  });
});
