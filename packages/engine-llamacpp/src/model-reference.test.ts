import { createReadStream } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TdistError, withTimeout } from "@tdist/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgufWriter } from "./gguf-writer.js";
import type { ModelProgress } from "./model-progress.js";
import { isRemoteModelReference, resolveModelReference } from "./model-reference.js";

let dir: string;
let modelFile: string;
let server: Server;
let endpoint: string;
const requests: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "tdist-model-ref-"));
  modelFile = join(dir, "served.gguf");
  await new GgufWriter()
    .addString("general.architecture", "llama")
    .addTensor("t", [1024], (out) => out.fill(0.5))
    .write(modelFile);
  const size = (await stat(modelFile)).size;
  // A stand-in for the Hugging Face hub: files under /{user}/{repo}/resolve/main/{file}.
  server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const url = new URL(req.url ?? "/", "http://localhost");
    if (url.pathname !== "/tdist/tiny/resolve/main/tiny.gguf") {
      res.writeHead(404).end("not found");
      return;
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    const start = range ? Number(range[1]) : 0;
    const end = range?.[2] ? Number(range[2]) : size - 1;
    const headers = {
      "content-type": "application/octet-stream",
      "accept-ranges": "bytes",
      "content-length": String(end - start + 1),
      ...(range ? { "content-range": `bytes ${start}-${end}/${size}` } : {}),
    };
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === "HEAD") res.end();
    else createReadStream(modelFile, { start, end }).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

const bounded = <T>(fn: () => Promise<T>): Promise<T> => withTimeout("model reference", 30_000, undefined, fn);

describe("model reference", () => {
  it("model reference - tells remote references from paths", () => {
    expect(isRemoteModelReference("hf:user/repo/file.gguf")).toBe(true);
    expect(isRemoteModelReference("https://example.com/m.gguf")).toBe(true);
    expect(isRemoteModelReference("./models/m.gguf")).toBe(false);
    expect(isRemoteModelReference("/abs/m.gguf")).toBe(false);
  });

  it("model reference - a local path resolves to itself; a missing one is a bad_request", async () => {
    expect(await resolveModelReference(modelFile)).toBe(modelFile);
    const err = await resolveModelReference(join(dir, "nope.gguf")).catch((e: unknown) => e);
    expect(TdistError.is(err, "bad_request")).toBe(true);
    expect((err as Error).message).toContain("nope.gguf");
  });

  it("model reference - an hf: reference downloads once into the cache", async () => {
    const cacheDir = join(dir, "cache");
    const progress: ModelProgress[] = [];
    const path = await bounded(() =>
      resolveModelReference("hf:tdist/tiny/tiny.gguf", {
        cacheDir,
        huggingFaceEndpoint: endpoint,
        onProgress: (event) => progress.push(event),
      }),
    );
    expect(path.startsWith(join(cacheDir, "models"))).toBe(true);
    expect(await readFile(path)).toEqual(await readFile(modelFile));
    // Progress events arrive, never go back, and end at 100%.
    const size = (await stat(modelFile)).size;
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every((event) => event.phase === "download" && event.model === "hf:tdist/tiny/tiny.gguf")).toBe(
      true,
    );
    expect(progress.map((event) => event.bytes)).toEqual(
      [...progress.map((event) => event.bytes)].sort((a, b) => a - b),
    );
    expect(progress.at(-1)).toMatchObject({ bytes: size, totalBytes: size });
    const served = requests.filter((line) => line.startsWith("GET")).length;
    expect(served).toBeGreaterThan(0);
    const cachedProgress: ModelProgress[] = [];
    const again = await bounded(() =>
      resolveModelReference("hf:tdist/tiny/tiny.gguf", {
        cacheDir,
        huggingFaceEndpoint: endpoint,
        onProgress: (event) => cachedProgress.push(event),
      }),
    );
    expect(cachedProgress).toEqual([]);
    expect(again).toBe(path);
    expect(requests.filter((line) => line.startsWith("GET")).length).toBe(served);
  });

  it("model reference - offline or unknown downloads are cannot_connect errors naming the reference", async () => {
    const cacheDir = join(dir, "cache-offline");
    // A port that was free a moment ago: the connection is refused, as offline.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const offline = await bounded(() =>
      resolveModelReference("hf:tdist/tiny/tiny.gguf", { cacheDir, huggingFaceEndpoint: `http://127.0.0.1:${port}/` }),
    ).catch((e: unknown) => e);
    expect(TdistError.is(offline, "cannot_connect")).toBe(true);
    expect((offline as Error).message).toContain("hf:tdist/tiny/tiny.gguf");

    const unknown = await bounded(() =>
      resolveModelReference("hf:tdist/tiny/absent.gguf", { cacheDir, huggingFaceEndpoint: endpoint }),
    ).catch((e: unknown) => e);
    expect(TdistError.is(unknown, "cannot_connect")).toBe(true);
  });
});
