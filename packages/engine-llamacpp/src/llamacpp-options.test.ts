import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { defaultThreads, resolveLlamaCppEngineOptions } from "./llamacpp-options.js";

describe("llamacpp options", () => {
  it("llamacpp options - default threads leave a core free, at most 4", () => {
    expect(defaultThreads(1)).toBe(1);
    expect(defaultThreads(2)).toBe(1);
    expect(defaultThreads(4)).toBe(3);
    expect(defaultThreads(64)).toBe(4);
  });

  it("llamacpp options - resolves defaults", () => {
    const resolved = resolveLlamaCppEngineOptions({ modelPath: "m.gguf" });
    expect(resolved).toMatchObject({ sequences: 8, batchSize: 512, flashAttention: false, gpu: false });
    expect(resolved.threads).toBe(defaultThreads());
    expect(resolved.contextSize).toBeUndefined();
  });

  it("llamacpp options - invalid options are invalid_option errors naming the option", () => {
    const bad = [
      { modelPath: "" },
      { modelPath: "m.gguf", threads: 0 },
      { modelPath: "m.gguf", sequences: 1.5 },
      { modelPath: "m.gguf", contextSize: 8 },
      { modelPath: "m.gguf", gpu: "tpu" as never },
      { modelPath: "m.gguf", kvTransfer: {} as never },
      { modelPath: "m.gguf", tempDir: "" },
    ];
    for (const options of bad) {
      let caught: unknown;
      try {
        resolveLlamaCppEngineOptions(options);
      } catch (err) {
        caught = err;
      }
      expect(TdistError.is(caught, "invalid_option")).toBe(true);
    }
    expect(() => resolveLlamaCppEngineOptions({ modelPath: "m.gguf", threads: -1 })).toThrow(/threads/);
    expect(() => resolveLlamaCppEngineOptions({ modelPath: "m.gguf", kvTransfer: {} as never })).toThrow(/kvTransfer/);
  });
});
