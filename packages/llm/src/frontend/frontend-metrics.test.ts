import { describe, expect, it } from "vitest";
import { FrontendMetrics } from "./frontend-metrics.js";

describe("frontend metrics", () => {
  it("frontend metrics - the registry carries the process's RSS, event-loop lag and handles", async () => {
    const metrics = new FrontendMetrics();
    const names = (await metrics.registry.getMetricsAsJSON()).map((metric) => metric.name);
    expect(names).toEqual(
      expect.arrayContaining([
        "process_resident_memory_bytes",
        "nodejs_eventloop_lag_p99_seconds",
        "nodejs_active_handles_total",
      ]),
    );
  }, 10_000);

  it("frontend metrics - two frontends in one process each expose their own process metrics", async () => {
    const first = new FrontendMetrics();
    const second = new FrontendMetrics();
    for (const metrics of [first, second]) {
      const text = await metrics.registry.metrics();
      expect(text).toMatch(/^nodejs_active_handles_total \d+$/m);
    }
  }, 10_000);
});
