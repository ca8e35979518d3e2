import type { EngineOutput, PreprocessedRequest } from "@tdist/llm";
import {
  Context,
  DistributedRuntime,
  delay,
  type KvTransferHandle,
  MemoryDiscoveryStore,
  TdistError,
  withTimeout,
} from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServedLlamaCppWorker, serveLlamaCppWorker } from "./serve-llamacpp-worker.js";
import { GENERATE_BOUND_MS, prompts, request, TEST_CACHE_DIR, tinyModelPath } from "./testing/llamacpp-fixtures.js";

describe("llamacpp worker", () => {
  let runtime: DistributedRuntime;
  let worker: ServedLlamaCppWorker;

  beforeAll(async () => {
    await tinyModelPath();
    runtime = await DistributedRuntime.create({
      env: {},
      discovery: { kind: "memory", store: new MemoryDiscoveryStore() },
    });
    worker = await withTimeout("starting the worker", 60_000, undefined, () =>
      serveLlamaCppWorker(runtime, {
        namespace: "llamacpp-test",
        cacheDir: TEST_CACHE_DIR,
        engine: { sequences: 2, contextSize: 256 },
      }),
    );
  }, 120_000);

  afterAll(async () => {
    await worker?.stop({ graceMs: 500 });
    await runtime?.shutdown({ graceMs: 500 });
  });

  it("llamacpp worker - registers a card from the GGUF and serves generate over the runtime", async () => {
    expect(worker.card).toMatchObject({
      name: "tdist-tiny-random",
      engine: "llamacpp",
      eosToken: "<|im_end|>",
      contextLength: 256,
      limits: { maxSequences: 2 },
    });
    expect(worker.card.tokenizer.source.kind).toBe("endpoint");
    const client = await runtime
      .namespace("llamacpp-test")
      .component("backend")
      .endpoint("generate")
      .client<PreprocessedRequest, EngineOutput>();
    const [prompt] = prompts(1) as [number[]];
    const outputs = await withTimeout("generate", GENERATE_BOUND_MS, undefined, async () => {
      const seen: EngineOutput[] = [];
      for await (const output of client.generate(request(prompt, 6))) seen.push(output);
      return seen;
    });
    expect(outputs.flatMap((output) => output.tokenIds)).toHaveLength(6);
    expect(outputs.at(-1)?.finishReason).toBe("length");
  });

  it("llamacpp worker - a prefill worker registers under prefill and offers the prompt's KV through the runtime", async () => {
    const prefill = await withTimeout("starting the prefill worker", 60_000, undefined, () =>
      serveLlamaCppWorker(runtime, {
        namespace: "llamacpp-test",
        role: "prefill",
        cacheDir: TEST_CACHE_DIR,
        engine: { sequences: 1, contextSize: 256 },
      }),
    );
    try {
      expect(prefill.card.role).toBe("prefill");
      expect(worker.card.role).toBeUndefined();
      const client = await runtime
        .namespace("llamacpp-test")
        .component("prefill")
        .endpoint("generate")
        .client<PreprocessedRequest, EngineOutput>();
      const [prompt] = prompts(1) as [number[]];
      const outputs = await withTimeout("prefill", GENERATE_BOUND_MS, undefined, async () => {
        const seen: EngineOutput[] = [];
        for await (const output of client.generate({ ...request(prompt, 6), disaggregation: { phase: "prefill" } })) {
          seen.push(output);
        }
        return seen;
      });
      expect(outputs).toHaveLength(1);
      expect(outputs[0]?.tokenIds).toHaveLength(1);
      expect(outputs[0]?.finishReason).toBeUndefined();
      const handle = outputs[0]?.kvTransfer as KvTransferHandle;
      expect(runtime.kvTransfer.openOffers).toBe(1);
      let bytes = 0;
      for await (const chunk of runtime.kvTransfer.fetch(handle, { timeoutMs: GENERATE_BOUND_MS }))
        bytes += chunk.byteLength;
      expect(bytes).toBe(handle.byteCount);
    } finally {
      await prefill.stop({ graceMs: 500 });
    }
  });

  it("llamacpp worker - an engine whose child crashes past maxRestarts fails, and the worker leaves routing", async () => {
    const failing = await withTimeout("starting the crash-looping worker", 60_000, undefined, () =>
      serveLlamaCppWorker(runtime, {
        namespace: "llamacpp-crash-loop",
        cacheDir: TEST_CACHE_DIR,
        engine: { sequences: 1, contextSize: 256, maxRestarts: 1 },
      }),
    );
    try {
      const client = await runtime
        .namespace("llamacpp-crash-loop")
        .component("backend")
        .endpoint("generate")
        .client<PreprocessedRequest, EngineOutput>();
      await client.waitForInstances({ timeoutMs: GENERATE_BOUND_MS });
      process.kill(failing.engine.childPid as number, "SIGKILL");
      await withTimeout("first restart", 60_000, undefined, async () => {
        while (failing.engine.state !== "running" || failing.engine.stats().restarts !== 1) await delay(20);
      });
      process.kill(failing.engine.childPid as number, "SIGKILL");
      const cause = await withTimeout("engine failed", GENERATE_BOUND_MS, undefined, () => failing.engine.failed);
      expect(TdistError.is(cause, "internal")).toBe(true);
      expect(failing.engine.state).toBe("failed");
      await withTimeout("card and endpoint gone", GENERATE_BOUND_MS, undefined, async () => {
        while (client.instances().length > 0) await delay(20);
      });
      // A request that still reaches it hears a crash, which a frontend migrates.
      const [prompt] = prompts(1) as [number[]];
      const outputs: EngineOutput[] = [];
      for await (const output of failing.engine.generate(request(prompt, 4), new Context())) outputs.push(output);
      expect(outputs.at(-1)).toMatchObject({ finishReason: "error", errorCode: "engine_crashed" });
    } finally {
      await failing.stop({ graceMs: 0 });
    }
  });
});
