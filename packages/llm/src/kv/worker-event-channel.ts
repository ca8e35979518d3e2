import { type DistributedRuntime, eventSubject } from "@tdist/runtime";
import type { KvEventPublisher } from "./kv-event-sink.js";
import { answerKvResyncRequests } from "./kv-resync.js";

/** Where a model worker's engine sends its KV events and load metrics, and how it answers resync requests. */
export interface WorkerEventChannel {
  /** The runtime's instance id: the id routers know the worker by. */
  workerId: string;
  /** Publishes `(topic, payload)` on `{namespace}.{component}.{topic}` of the runtime's event plane. */
  publisher: KvEventPublisher;
  /** Re-sends the engine's KV state (`resync`) whenever a router asks for this worker; `stop()` ends it. */
  answerResync(resync: () => Promise<void>): Promise<{ stop(): Promise<void> }>;
}

/**
 * The event wiring every engine's `serve*Worker` shares: worker id from the
 * runtime's primary lease, topics mapped under the worker's component, and
 * resync answering on the namespace's `kv-resync` subject.
 */
export async function workerEventChannel(
  runtime: DistributedRuntime,
  namespace: string,
  component: string,
): Promise<WorkerEventChannel> {
  const lease = await runtime.primaryLease();
  const plane = await runtime.eventPlane();
  const workerId = lease.id;
  return {
    workerId,
    publisher: { publish: (topic, payload) => plane.publish(eventSubject(namespace, component, topic), payload) },
    async answerResync(resync) {
      const controller = new AbortController();
      const answering = await answerKvResyncRequests({
        plane,
        namespace,
        workerId,
        resync,
        signal: controller.signal,
        logger: runtime.logger,
      });
      return {
        async stop() {
          controller.abort();
          await answering.done;
        },
      };
    },
  };
}
