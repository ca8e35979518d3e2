import { type EngineOutput, PREFILL_COMPONENT, type PreprocessedRequest } from "@tdist/llm";
import { DistributedRuntime, type KvTransferHandle, MemoryDiscoveryStore, withTimeout } from "@tdist/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { type ServedMockerWorker, serveMockerWorker } from "./serve-mocker-worker.js";

const BOUND_MS = 15_000;
const NS = "disagg-worker";

const request = (
  tokenIds: number[],
  maxTokens: number,
  disaggregation?: PreprocessedRequest["disaggregation"],
): PreprocessedRequest => ({
  model: "mocker",
  tokenIds,
  sampling: { temperature: 0 },
  stop: { maxTokens, ignoreEos: true },
  eosTokenIds: [],
  output: {},
  ...(disaggregation !== undefined ? { disaggregation } : {}),
});

describe("mocker worker", () => {
  const store = new MemoryDiscoveryStore();
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function runtime(): Promise<DistributedRuntime> {
    const rt = await DistributedRuntime.create({
      env: {},
      discovery: { kind: "memory", store },
      kvTransfer: { kind: "tcp", host: "127.0.0.1" },
    });
    cleanups.push(() => rt.shutdown());
    return rt;
  }

  async function worker(
    rt: DistributedRuntime,
    role: "aggregated" | "prefill" | "decode",
  ): Promise<ServedMockerWorker> {
    const served = await serveMockerWorker(rt, { namespace: NS, role, engine: { speedupRatio: 1000, blockSize: 16 } });
    cleanups.push(() => served.stop({ graceMs: 200 }));
    return served;
  }

  /** Every output of one request sent over the request plane to `component`'s workers. */
  async function call(rt: DistributedRuntime, component: string, req: PreprocessedRequest): Promise<EngineOutput[]> {
    return withTimeout("generate", BOUND_MS, undefined, async () => {
      const client = await rt
        .namespace(NS)
        .component(component)
        .endpoint("generate")
        .client<PreprocessedRequest, EngineOutput>();
      await client.waitForInstances({ timeoutMs: BOUND_MS });
      const out: EngineOutput[] = [];
      for await (const message of client.generate(req)) out.push(message);
      return out;
    });
  }

  it("mocker worker - a prefill worker registers under prefill with its role, and its KV crosses to a decode worker in another runtime over TCP", async () => {
    const prefillRuntime = await runtime();
    const decodeRuntime = await runtime();
    const frontend = await runtime();
    const prefill = await worker(prefillRuntime, "prefill");
    const decode = await worker(decodeRuntime, "decode");
    expect(prefill.card.role).toBe("prefill");
    expect(decode.card.role).toBe("decode");
    const tokens = Array.from({ length: 300 }, (_, i) => 5000 + i);
    const expected = (await call(frontend, "backend", request(tokens, 8))).flatMap((m) => m.tokenIds);

    const answer = await call(frontend, PREFILL_COMPONENT, request(tokens, 8, { phase: "prefill" }));
    expect(answer).toHaveLength(1);
    const handle = answer[0]?.kvTransfer as KvTransferHandle;
    expect(handle.address.tcp).toBeDefined();
    const rest = await call(
      frontend,
      "backend",
      request([...tokens, ...(answer[0]?.tokenIds ?? [])], 7, {
        phase: "decode",
        kvTransfer: handle,
        kvTokens: tokens.length,
        prefillWorkerId: prefill.instanceId,
      }),
    );
    expect(rest[0]?.kvImport).toBe("fetched");
    expect([...(answer[0]?.tokenIds ?? []), ...rest.flatMap((m) => m.tokenIds)]).toEqual(expected);
    expect(prefillRuntime.kvTransfer.openOffers).toBe(0);
  });

  it("mocker worker - a prefill worker that dies before the fetch leaves the decode worker to prefill locally", async () => {
    const prefillRuntime = await runtime();
    const decodeRuntime = await runtime();
    const frontend = await runtime();
    await worker(prefillRuntime, "prefill");
    await worker(decodeRuntime, "decode");
    const tokens = Array.from({ length: 100 }, (_, i) => 9000 + i);
    const expected = (await call(frontend, "backend", request(tokens, 5))).flatMap((m) => m.tokenIds);
    const answer = await call(frontend, PREFILL_COMPONENT, request(tokens, 5, { phase: "prefill" }));
    await prefillRuntime.shutdown();
    const rest = await call(
      frontend,
      "backend",
      request([...tokens, ...(answer[0]?.tokenIds ?? [])], 4, {
        phase: "decode",
        kvTransfer: answer[0]?.kvTransfer as KvTransferHandle,
        kvTokens: tokens.length,
        prefillWorkerId: "gone",
      }),
    );
    expect(rest[0]?.kvImport).toBe("fallback");
    expect([...(answer[0]?.tokenIds ?? []), ...rest.flatMap((m) => m.tokenIds)]).toEqual(expected);
  });
});
