import { afterEach, describe, expect, it, vi } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import { bounded } from "../event-plane/event-plane-conformance.js";
import type { WorkItem, WorkQueue, WorkQueues } from "./work-queue.js";

export interface WorkQueueConformanceOptions {
  /** Ack wait the suite configures its queues with (ms); keep it short, about 1 s. */
  ackWaitMs: number;
}

/**
 * The behaviour every work queue backend must show, run against each one by
 * its own test file. `createQueues` returns a new `WorkQueues` on one shared
 * backend per call (a separate connection for NATS), standing for another
 * process; closing it stands for that process dying.
 *
 * Test-only: imports vitest.
 */
export function describeWorkQueueConformance(
  backend: string,
  createQueues: () => Promise<WorkQueues>,
  { ackWaitMs }: WorkQueueConformanceOptions,
): void {
  describe(`work queue conformance (${backend})`, () => {
    const opened: WorkQueues[] = [];
    let counter = 0;
    const queues = async (): Promise<WorkQueues> => {
      const created = await createQueues();
      opened.push(created);
      return created;
    };
    /** A queue name no other test (or earlier run on the same server) uses. */
    const uniqueName = (): string => `wq-${process.pid}-${Date.now().toString(36)}-${counter++}`;
    const open = async <T>(name: string, on?: WorkQueues): Promise<WorkQueue<T>> =>
      (on ?? (await queues())).open<T>(name, { ackWaitMs, maxDeliver: 5 });
    const dequeue = async <T>(queue: WorkQueue<T>, timeoutMs = 5_000): Promise<WorkItem<T> | undefined> =>
      bounded(queue.dequeue({ timeoutMs }), `dequeue on ${queue.name}`, timeoutMs + 5_000);
    const mustDequeue = async <T>(queue: WorkQueue<T>, timeoutMs = 5_000): Promise<WorkItem<T>> => {
      const item = await dequeue(queue, timeoutMs);
      if (!item) throw new Error(`no item on ${queue.name} within ${timeoutMs} ms`);
      return item;
    };

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((q) => bounded(q.close(), "work queues close")));
    });

    it("work queue - delivers in FIFO order; ack removes; depth counts unacked items", async () => {
      const queue = await open<{ n: number }>(uniqueName());
      for (let n = 1; n <= 3; n++) await queue.enqueue({ n });
      expect(await queue.depth()).toBe(3);
      const first = await mustDequeue(queue);
      expect(first.payload).toEqual({ n: 1 });
      expect(first.deliveryCount).toBe(1);
      expect(await queue.depth()).toBe(3);
      await first.ack();
      expect(await queue.depth()).toBe(2);
      const rest = [await mustDequeue(queue), await mustDequeue(queue)];
      expect(rest.map((item) => item.payload.n)).toEqual([2, 3]);
      for (const item of rest) await item.ack();
      expect(await queue.depth()).toBe(0);
      expect(await dequeue(queue, 300)).toBeUndefined();
    });

    it("work queue - nak redelivers at once with deliveryCount 2 and the same id", async () => {
      const queue = await open<string>(uniqueName());
      await queue.enqueue("job");
      const first = await mustDequeue(queue);
      await first.nak();
      const again = await mustDequeue(queue, 2_000);
      expect(again.payload).toBe("job");
      expect(again.deliveryCount).toBe(2);
      expect(again.id).toBe(first.id);
      await again.ack();
      expect(await queue.depth()).toBe(0);
    });

    it("work queue - nak with a delay holds the item back for that long", async () => {
      const queue = await open<string>(uniqueName());
      await queue.enqueue("later");
      const first = await mustDequeue(queue);
      const nakAt = Date.now();
      await first.nak(500);
      expect(await queue.depth()).toBe(1);
      const again = await mustDequeue(queue);
      expect(Date.now() - nakAt).toBeGreaterThanOrEqual(400);
      expect(again.deliveryCount).toBe(2);
      await again.ack();
    });

    it("work queue - an item held by a consumer that dies is redelivered once to another after the ack wait", async () => {
      const name = uniqueName();
      const survivor = await open<string>(name);
      const doomedProcess = await queues();
      const doomed = await open<string>(name, doomedProcess);
      await survivor.enqueue("precious");
      const taken = await mustDequeue(doomed);
      expect(taken.deliveryCount).toBe(1);
      const diedAt = Date.now();
      await doomedProcess.close();

      const redelivered = await mustDequeue(survivor, ackWaitMs + 5_000);
      expect(Date.now() - diedAt).toBeGreaterThanOrEqual(ackWaitMs * 0.8);
      expect(redelivered.payload).toBe("precious");
      expect(redelivered.deliveryCount).toBe(2);
      await redelivered.ack();
      // Exactly once: nothing more arrives well past another ack wait.
      expect(await dequeue(survivor, ackWaitMs + 500)).toBeUndefined();
      expect(await survivor.depth()).toBe(0);
    });

    it("work queue - competing consumers each get distinct items, every item once", async () => {
      const name = uniqueName();
      const [processA, processB] = [await queues(), await queues()];
      const consumers = [
        await open<number>(name, processA),
        await open<number>(name, processA),
        await open<number>(name, processB),
      ];
      const total = 30;
      for (let n = 0; n < total; n++) await (consumers[0] as WorkQueue<number>).enqueue(n);
      const seen: number[] = [];
      const perConsumer = consumers.map(() => 0);
      const done = new AbortController();
      await bounded(
        Promise.all(
          consumers.map(async (consumer, index) => {
            while (!done.signal.aborted) {
              let item: WorkItem<number> | undefined;
              try {
                item = await consumer.dequeue({ signal: done.signal, timeoutMs: 5_000 });
              } catch (err) {
                if (TdistError.is(err, "cancelled")) return;
                throw err;
              }
              if (!item) continue;
              expect(item.deliveryCount).toBe(1);
              seen.push(item.payload);
              perConsumer[index] = (perConsumer[index] ?? 0) + 1;
              await item.ack();
              if (seen.length === total) done.abort();
            }
          }),
        ),
        "all items consumed",
        20_000,
      );
      expect([...seen].sort((a, b) => a - b)).toEqual([...Array(total).keys()]);
      expect(await (consumers[0] as WorkQueue<number>).depth()).toBe(0);
    });

    it("work queue - inProgress keeps an item from being redelivered past the ack wait", async () => {
      const name = uniqueName();
      const worker = await open<string>(name);
      const other = await open<string>(name);
      await worker.enqueue("long job");
      const item = await mustDequeue(worker);
      const heartbeat = setInterval(
        () => {
          item.inProgress().catch(() => {});
        },
        Math.floor(ackWaitMs / 4),
      );
      try {
        expect(await dequeue(other, Math.round(ackWaitMs * 1.8))).toBeUndefined();
      } finally {
        clearInterval(heartbeat);
      }
      await item.ack();
      expect(await worker.depth()).toBe(0);
    });

    it("work queue - an item past maxDeliver is dropped", async () => {
      const queue = await (await queues()).open<string>(uniqueName(), { ackWaitMs, maxDeliver: 2 });
      await queue.enqueue("poison");
      const first = await mustDequeue(queue);
      await first.nak();
      const second = await mustDequeue(queue);
      expect(second.deliveryCount).toBe(2);
      await second.nak();
      expect(await dequeue(queue, 1_000)).toBeUndefined();
      await vi.waitFor(async () => expect(await queue.depth()).toBe(0), { timeout: 3_000, interval: 50 });
    });

    it("work queue - abort rejects a pending dequeue with cancelled and loses no item", async () => {
      const queue = await open<string>(uniqueName());
      const controller = new AbortController();
      const pending = queue.dequeue({ signal: controller.signal });
      controller.abort();
      await expect(bounded(pending, "aborted dequeue")).rejects.toSatisfy((err) => TdistError.is(err, "cancelled"));
      await expect(queue.dequeue({ signal: AbortSignal.abort() })).rejects.toSatisfy((err) =>
        TdistError.is(err, "cancelled"),
      );
      await queue.enqueue("after abort");
      const item = await mustDequeue(queue);
      expect(item.payload).toBe("after abort");
      expect(item.deliveryCount).toBe(1);
      await item.ack();
    });

    it("work queue - close rejects pending dequeues with shutting_down and later calls too", async () => {
      const queue = await open<string>(uniqueName());
      const pending = queue.dequeue();
      await queue.close();
      await expect(bounded(pending, "dequeue during close")).rejects.toSatisfy((err) =>
        TdistError.is(err, "shutting_down"),
      );
      await expect(queue.enqueue("x")).rejects.toSatisfy((err) => TdistError.is(err, "shutting_down"));
      await expect(queue.dequeue()).rejects.toSatisfy((err) => TdistError.is(err, "shutting_down"));
    });

    it("work queue - validates names, options and payloads by code", async () => {
      const backendQueues = await queues();
      const code = async (fn: () => Promise<unknown>): Promise<string | undefined> => {
        try {
          await fn();
          return undefined;
        } catch (err) {
          return TdistError.is(err) ? err.code : "not a TdistError";
        }
      };
      expect(await code(() => backendQueues.open("Bad.Name"))).toBe("invalid_name");
      expect(await code(() => backendQueues.open("ok", { ackWaitMs: 0 }))).toBe("invalid_option");
      expect(await code(() => backendQueues.open("ok", { maxDeliver: 1.5 }))).toBe("invalid_option");
      const queue = await backendQueues.open(uniqueName(), { ackWaitMs });
      expect(await code(() => queue.enqueue(undefined))).toBe("codec_error");
      expect(await code(() => queue.dequeue({ timeoutMs: -1 }))).toBe("invalid_option");
    });
  });
}
