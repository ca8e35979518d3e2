import type { Logger } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { logModelProgress } from "./model-progress.js";

function recordingLogger(lines: { fields: object; message: string }[]): Logger {
  const logger: Logger = {
    debug: () => {},
    info: (fields, message) => void lines.push({ fields, message: message ?? "" }),
    warn: () => {},
    error: () => {},
    child: () => logger,
  };
  return logger;
}

describe("model progress", () => {
  it("model progress - logs the first event, one per interval, and the last, with bytes, percent and rate", () => {
    const lines: { fields: object; message: string }[] = [];
    let clock = 0;
    const listener = logModelProgress(recordingLogger(lines), { intervalMs: 2_000, now: () => clock });
    const total = 100_000_000;
    for (let second = 0; second <= 10; second++) {
      clock = second * 1_000;
      listener({ phase: "download", model: "hf:a/b/c.gguf", bytes: second * 10_000_000, totalBytes: total });
    }
    // Seconds 0, 2, 4, 6, 8 and 10 (the last, complete).
    expect(lines).toHaveLength(6);
    expect(lines.at(-1)?.message).toBe("downloading hf:a/b/c.gguf: 100.0 MB of 100.0 MB (100%), 10.0 MB/s");
    expect(lines[1]?.fields).toMatchObject({
      bytes: 20_000_000,
      totalBytes: total,
      percent: 20,
      bytesPerSecond: 10_000_000,
    });
  });

  it("model progress - a generation and an unknown size read as such", () => {
    const lines: { fields: object; message: string }[] = [];
    const listener = logModelProgress(recordingLogger(lines), { now: () => 0 });
    listener({ phase: "generate", model: "/cache/m.gguf", bytes: 5_000_000, totalBytes: undefined });
    expect(lines.map((line) => line.message)).toEqual(["generating the built-in model /cache/m.gguf: 5.0 MB"]);
  });
});
