import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { numberFlag, parseRouterMode } from "./options.js";
import { runCommand, workerSpec } from "./serve.js";

const errorOf = (fn: () => unknown): TdistError | undefined => {
  try {
    fn();
  } catch (err) {
    return err as TdistError;
  }
  return undefined;
};

describe("cli options", () => {
  it("cli options - numeric flags are parsed within their range and name the flag otherwise", () => {
    expect(numberFlag("x", undefined)).toBeUndefined();
    expect(numberFlag("active-decode-blocks-threshold", "0.85", { min: 0, max: 1 })).toBe(0.85);
    expect(numberFlag("active-decode-blocks-threshold", "1", { min: 0, max: 1 })).toBe(1);
    const tooHigh = errorOf(() => numberFlag("active-decode-blocks-threshold", "1.5", { min: 0, max: 1 }));
    expect(TdistError.is(tooHigh, "invalid_option")).toBe(true);
    expect(tooHigh?.message).toBe('--active-decode-blocks-threshold must be a number >= 0 and <= 1, got "1.5"');
    expect(errorOf(() => numberFlag("workers", "2.5", { min: 1, integer: true }))?.message).toBe(
      '--workers must be an integer >= 1, got "2.5"',
    );
    expect(
      TdistError.is(
        errorOf(() => numberFlag("port", "abc")),
        "invalid_option",
      ),
    ).toBe(true);
  });

  it("cli options - router modes are checked", () => {
    expect(parseRouterMode(undefined)).toBe("round-robin");
    expect(parseRouterMode("kv")).toBe("kv");
    expect(
      TdistError.is(
        errorOf(() => parseRouterMode("fastest")),
        "invalid_option",
      ),
    ).toBe(true);
  });

  it("cli options - --no-kv-events turns a llama.cpp worker's KV events off and is refused for other engines", () => {
    expect(workerSpec({ engine: "llamacpp" }, "ns").kvEvents).toBe(true);
    expect(workerSpec({ engine: "llamacpp", "no-kv-events": true }, "ns").kvEvents).toBe(false);
    const mocker = errorOf(() => workerSpec({ engine: "mocker", "no-kv-events": true }, "ns"));
    expect(TdistError.is(mocker, "invalid_option")).toBe(true);
    expect(mocker?.message).toBe("--no-kv-events applies to --engine llamacpp only, got --engine mocker");
  });

  it("cli options - tdist run refuses --router-mode kv without KV events, before starting anything", async () => {
    const io = { out: () => {}, err: () => {} };
    const refused = await runCommand(["--engine", "llamacpp", "--no-kv-events", "--router-mode", "kv"], io).then(
      () => undefined,
      (err: unknown) => err as TdistError,
    );
    expect(TdistError.is(refused, "invalid_option")).toBe(true);
    expect(refused?.message).toContain("use --router-mode kv-approx");
  });
});
