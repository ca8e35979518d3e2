import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TdistError } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGgufFile } from "./gguf-reader.js";
import { GgufWriter } from "./gguf-writer.js";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tdist-gguf-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sampleWriter(): GgufWriter {
  return new GgufWriter()
    .addString("general.architecture", "llama")
    .addUint32("llama.block_count", 2)
    .addInt32("answer", -42)
    .addFloat32("llama.attention.layer_norm_rms_epsilon", 0.5)
    .addBool("flag", true)
    .addUint64("big", 2n ** 60n)
    .addArray("tokenizer.ggml.tokens", "string", ["a", "é", "<|im_end|>"])
    .addArray("tokenizer.ggml.token_type", "int32", [1, 1, 3])
    .addTensor("vector", [3], (out) => out.set([1, 2, 3]))
    .addTensor("matrix", [4, 2], (out) => out.fill(0.25));
}

describe("gguf writer", () => {
  it("gguf writer - writes v3 files the reader reads back", async () => {
    const path = join(dir, "sample.gguf");
    const bytes = await sampleWriter().write(path);
    const file = await readFile(path);
    expect(file.length).toBe(bytes);
    expect(file.subarray(0, 4).toString("latin1")).toBe("GGUF");
    expect(file.readUInt32LE(4)).toBe(3);
    expect(file.readBigUInt64LE(8)).toBe(2n);
    expect(file.readBigUInt64LE(16)).toBe(8n);

    const info = await readGgufFile(path);
    expect(info.version).toBe(3);
    expect(info.metadata.get("general.architecture")).toBe("llama");
    expect(info.metadata.get("llama.block_count")).toBe(2);
    expect(info.metadata.get("answer")).toBe(-42);
    expect(info.metadata.get("llama.attention.layer_norm_rms_epsilon")).toBe(0.5);
    expect(info.metadata.get("flag")).toBe(true);
    expect(info.metadata.get("big")).toBe(2n ** 60n);
    expect(info.metadata.get("tokenizer.ggml.tokens")).toEqual(["a", "é", "<|im_end|>"]);
    expect(info.metadata.get("tokenizer.ggml.token_type")).toEqual([1, 1, 3]);
    expect(info.tensors).toEqual([
      { name: "vector", dims: [3], type: 0, offset: 0 },
      { name: "matrix", dims: [4, 2], type: 0, offset: 32 },
    ]);
    expect(info.dataOffset % 32).toBe(0);
    const vector = new Float32Array(
      file.buffer.slice(file.byteOffset + info.dataOffset, file.byteOffset + info.dataOffset + 12),
    );
    expect([...vector]).toEqual([1, 2, 3]);
    expect(file.readFloatLE(info.dataOffset + 32 + 7 * 4)).toBe(0.25);
  });

  it("gguf writer - the same content gives the same header fingerprint", async () => {
    const first = join(dir, "first.gguf");
    const second = join(dir, "second.gguf");
    await sampleWriter().write(first);
    await sampleWriter().addUint32("extra", 1).write(second);
    const again = join(dir, "again.gguf");
    await sampleWriter().write(again);
    const [a, b, c] = await Promise.all([readGgufFile(first), readGgufFile(second), readGgufFile(again)]);
    expect(a.headerSha256).toBe(c.headerSha256);
    expect(a.headerSha256).not.toBe(b.headerSha256);
  });

  it("gguf writer - refuses duplicate keys and tensors and bad dims", () => {
    expect(() => new GgufWriter().addUint32("k", 1).addUint32("k", 2)).toThrow(TdistError);
    expect(() => new GgufWriter().addTensor("t", [1], () => {}).addTensor("t", [1], () => {})).toThrow(TdistError);
    expect(() => new GgufWriter().addTensor("t", [0], () => {})).toThrow(TdistError);
  });
});

describe("gguf reader", () => {
  it("gguf reader - a truncated file is a bad_request naming it", async () => {
    const path = join(dir, "truncated.gguf");
    await sampleWriter().write(path);
    const info = await readGgufFile(path);
    await truncate(path, info.dataOffset + 40);
    const err = await readGgufFile(path).catch((e: unknown) => e);
    expect(TdistError.is(err, "bad_request")).toBe(true);
    expect((err as Error).message).toContain(path);
    expect((err as Error).message).toContain("truncated");

    await truncate(path, 100);
    const headerErr = await readGgufFile(path).catch((e: unknown) => e);
    expect(TdistError.is(headerErr, "bad_request")).toBe(true);
    expect((headerErr as Error).message).toContain(path);
  });

  it("gguf reader - a file that is not GGUF, or missing, is a bad_request naming it", async () => {
    const path = join(dir, "not-gguf.gguf");
    await writeFile(path, Buffer.alloc(4096, 7));
    const err = await readGgufFile(path).catch((e: unknown) => e);
    expect(TdistError.is(err, "bad_request")).toBe(true);
    expect((err as Error).message).toContain(path);

    const missing = join(dir, "missing.gguf");
    const missingErr = await readGgufFile(missing).catch((e: unknown) => e);
    expect(TdistError.is(missingErr, "bad_request")).toBe(true);
    expect((missingErr as Error).message).toContain(missing);
  });

  it("gguf reader - a corrupt count is refused without allocating it", async () => {
    const path = join(dir, "corrupt.gguf");
    await sampleWriter().write(path);
    const file = await readFile(path);
    file.writeBigUInt64LE(2n ** 50n, 16);
    await writeFile(path, file);
    const err = await readGgufFile(path).catch((e: unknown) => e);
    expect(TdistError.is(err, "bad_request")).toBe(true);
  });
});
