import { describeDiscoveryConformance } from "./discovery-conformance.js";
import { MemoryDiscovery, MemoryDiscoveryStore } from "./memory-discovery.js";

describeDiscoveryConformance("memory", async () => {
  const store = new MemoryDiscoveryStore();
  const discovery = new MemoryDiscovery(store);
  const second = new MemoryDiscovery(store);
  return {
    discovery,
    second,
    cleanup: async () => {
      await discovery.close();
      await second.close();
    },
  };
});
