import { MemoryDiscovery, MemoryDiscoveryStore } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { readStatus } from "./cluster-status.js";

describe("cluster status", () => {
  it("cluster status - records that are JSON but not objects are listed as unknown instead of failing the command", async () => {
    const discovery = new MemoryDiscovery(new MemoryDiscoveryStore());
    const values = ["null", "7", '"text"', "[]", "{", '{"transport":null,"registeredAt":"soon"}'];
    for (const [i, value] of values.entries()) {
      await discovery.put(`v1/instances/ns/backend/generate/${i + 1}`, value);
      await discovery.put(`v1/models/ns/backend/generate/${i + 1}`, value);
    }
    await discovery.put(
      "v1/instances/ns/backend/generate/ff",
      JSON.stringify({ transport: { tcp: "127.0.0.1:9" }, registeredAt: 1_000 }),
    );
    const status = await readStatus(discovery, 11_000);
    const instances = status.endpoints[0]?.instances ?? [];
    expect(instances).toHaveLength(values.length + 1);
    expect(instances.filter((instance) => instance.transport === "unknown")).toHaveLength(values.length);
    expect(instances.find((instance) => instance.instanceId === "ff")).toMatchObject({
      transport: "tcp://127.0.0.1:9",
      ageSeconds: 10,
    });
    expect(instances.every((instance) => Number.isFinite(instance.ageSeconds))).toBe(true);
    expect(status.models.map((model) => model.name)).toEqual(values.map(() => "unknown"));
  });
});
