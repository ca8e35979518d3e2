import type { EngineOutput, PreprocessedRequest } from "@tdist/llm";
import { DistributedRuntime, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
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
});
