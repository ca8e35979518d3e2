import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "./logging.js";
import { duplicatedKeys } from "./testing/json-keys.js";

function capture(isTTY: boolean): { stream: PassThrough & { isTTY?: boolean }; text: () => string } {
  const stream = Object.assign(new PassThrough(), { isTTY });
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}

async function flushed(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 20));
}

describe("logging - formats", () => {
  it("logging - json (and auto off a terminal) writes one JSON object a line, pid once, runtime named", async () => {
    for (const format of ["json", "auto"] as const) {
      const out = capture(false);
      const logger = createLogger({ level: "info", format, stream: out.stream });
      logger.child({ runtime: "worker-2" }).info({ model: "m" }, "model added");
      await flushed();
      const line = out.text().trim();
      const parsed = JSON.parse(line) as Record<string, unknown>;
      expect(parsed).toMatchObject({ pid: process.pid, runtime: "worker-2", model: "m", msg: "model added" });
      expect(parsed.hostname).toBeUndefined();
      expect(duplicatedKeys(line)).toEqual([]);
    }
  });

  it("logging - pretty (and auto on a terminal) writes one readable line per entry, not JSON", async () => {
    for (const [format, isTTY] of [
      ["pretty", false],
      ["auto", true],
    ] as const) {
      const out = capture(isTTY);
      const logger = createLogger({ level: "info", format, stream: out.stream });
      logger.child({ runtime: "frontend" }).warn({ model: "m" }, "model has no live workers");
      await flushed();
      const lines = out.text().trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain("model has no live workers");
      expect(lines[0]).toContain("frontend");
      expect(() => JSON.parse(lines[0] as string)).toThrow();
    }
  });
});
