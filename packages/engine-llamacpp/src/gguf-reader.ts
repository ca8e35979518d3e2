import { createHash } from "node:crypto";
import { type FileHandle, open } from "node:fs/promises";
import { TdistError } from "@tdist/runtime";
import {
  GGML_TYPE_SIZES,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_SCALAR_SIZES,
  type GgufMetadataValue,
  type GgufValueTypeName,
} from "./gguf-types.js";

export interface GgufTensorInfo {
  name: string;
  /** ggml order: `dims[0]` is the contiguous dimension. */
  dims: number[];
  /** ggml type id (0 = F32). */
  type: number;
  /** Offset from the start of the data section. */
  offset: number;
}

/** What a GGUF file says about itself, read without loading its tensors. */
export interface GgufFileInfo {
  path: string;
  version: number;
  metadata: Map<string, GgufMetadataValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Where tensor data starts in the file. */
  dataOffset: number;
  fileSize: number;
  /** sha256 hex of the header, metadata and tensor infos: identifies the model for KV state checks. */
  headerSha256: string;
}

const typeNames: GgufValueTypeName[] = [
  "uint8",
  "int8",
  "uint16",
  "int16",
  "uint32",
  "int32",
  "float32",
  "bool",
  "string",
  "array",
  "uint64",
  "int64",
  "float64",
];

const CHUNK_BYTES = 1 << 20;

/** Reads a file front to back through a window, so huge models are never read whole. */
class FileCursor {
  #window = Buffer.alloc(0);
  #windowStart = 0;
  #at = 0;
  readonly #hash = createHash("sha256");
  #hashedUpTo = 0;

  constructor(
    private readonly file: FileHandle,
    readonly size: number,
    private readonly fail: (reason: string) => TdistError,
  ) {}

  get position(): number {
    return this.#at;
  }

  async #ensure(bytes: number): Promise<void> {
    const windowEnd = this.#windowStart + this.#window.length;
    if (this.#at + bytes <= windowEnd) return;
    if (this.#at + bytes > this.size) throw this.fail(`truncated: needs more than its ${this.size} bytes`);
    const keep = this.#window.subarray(this.#at - this.#windowStart);
    const want = Math.max(bytes - keep.length, CHUNK_BYTES);
    const fresh = Buffer.alloc(Math.min(want, this.size - windowEnd));
    let filled = 0;
    while (filled < fresh.length) {
      const { bytesRead } = await this.file.read(fresh, filled, fresh.length - filled, windowEnd + filled);
      if (bytesRead === 0) throw this.fail("truncated while reading its header");
      filled += bytesRead;
    }
    this.#hashWindow();
    this.#window = Buffer.concat([keep, fresh]);
    this.#windowStart = this.#at;
  }

  /** Feeds the bytes consumed so far into the header hash. */
  #hashWindow(): void {
    const from = this.#hashedUpTo - this.#windowStart;
    const to = this.#at - this.#windowStart;
    if (to > from) this.#hash.update(this.#window.subarray(from, to));
    this.#hashedUpTo = this.#at;
  }

  headerSha256(): string {
    this.#hashWindow();
    return this.#hash.digest("hex");
  }

  async #take(bytes: number): Promise<Buffer> {
    await this.#ensure(bytes);
    const from = this.#at - this.#windowStart;
    this.#at += bytes;
    return this.#window.subarray(from, from + bytes);
  }

  async u32(): Promise<number> {
    return (await this.#take(4)).readUInt32LE(0);
  }

  async u64(): Promise<number> {
    const value = (await this.#take(8)).readBigUInt64LE(0);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`holds an impossible size ${value}`);
    return Number(value);
  }

  /** A length or count that must fit in what is left of the file. */
  async count(what: string, bytesEach: number): Promise<number> {
    const value = await this.u64();
    if (value * bytesEach > this.size - this.#at) {
      throw this.fail(`truncated or corrupt: ${what} ${value} does not fit in the file`);
    }
    return value;
  }

  async string(): Promise<string> {
    const length = await this.count("string length", 1);
    return (await this.#take(length)).toString("utf8");
  }

  /**
   * A value read synchronously when the window already holds it, else
   * `undefined` (then use `scalar`): arrays of 150k tokens are read without a
   * promise per element.
   */
  scalarSync(type: GgufValueTypeName): GgufMetadataValue | undefined {
    const available = this.#windowStart + this.#window.length - this.#at;
    if (type === "string") {
      if (available < 8) return undefined;
      const from = this.#at - this.#windowStart;
      const length = this.#window.readBigUInt64LE(from);
      if (length > BigInt(available - 8)) return undefined;
      this.#at += 8 + Number(length);
      return this.#window.toString("utf8", from + 8, from + 8 + Number(length));
    }
    const size = GGUF_SCALAR_SIZES[type];
    if (size === undefined || available < size) return undefined;
    const from = this.#at - this.#windowStart;
    this.#at += size;
    return this.#decode(type, this.#window.subarray(from, from + size));
  }

  async scalar(type: GgufValueTypeName): Promise<GgufMetadataValue> {
    if (type === "string") return this.string();
    const size = GGUF_SCALAR_SIZES[type];
    if (size === undefined) throw this.fail(`has a value of unknown type ${type}`);
    return this.#decode(type, await this.#take(size));
  }

  #decode(type: GgufValueTypeName, bytes: Buffer): GgufMetadataValue {
    switch (type) {
      case "uint8":
        return bytes.readUInt8(0);
      case "int8":
        return bytes.readInt8(0);
      case "uint16":
        return bytes.readUInt16LE(0);
      case "int16":
        return bytes.readInt16LE(0);
      case "uint32":
        return bytes.readUInt32LE(0);
      case "int32":
        return bytes.readInt32LE(0);
      case "float32":
        return bytes.readFloatLE(0);
      case "float64":
        return bytes.readDoubleLE(0);
      case "bool":
        return bytes.readUInt8(0) !== 0;
      case "uint64": {
        const value = bytes.readBigUInt64LE(0);
        return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
      }
      case "int64": {
        const value = bytes.readBigInt64LE(0);
        return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
          ? Number(value)
          : value;
      }
      default:
        throw this.fail(`has a value of unknown type ${type}`);
    }
  }

  async valueType(): Promise<GgufValueTypeName> {
    const id = await this.u32();
    const name = typeNames[id];
    if (name === undefined) throw this.fail(`is corrupt: unknown metadata value type ${id}`);
    return name;
  }
}

/**
 * Reads a GGUF file's header, metadata and tensor infos (not the tensors) and
 * checks that every tensor of a known type lies inside the file, so that a
 * corrupt or truncated file is reported here, naming the file, before
 * llama.cpp sees it. Errors are `bad_request` TdistErrors.
 *
 * ```ts
 * const info = await readGgufFile("model.gguf");
 * info.metadata.get("general.architecture"); // "llama"
 * ```
 */
export async function readGgufFile(path: string): Promise<GgufFileInfo> {
  const fail = (reason: string, cause?: unknown): TdistError =>
    new TdistError("bad_request", `GGUF file ${path} ${reason}`, cause === undefined ? undefined : { cause });
  let file: FileHandle;
  try {
    file = await open(path, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw fail(code === "ENOENT" ? "does not exist" : `cannot be opened (${code ?? String(err)})`, err);
  }
  try {
    const { size } = await file.stat();
    const cursor = new FileCursor(file, size, fail);
    if (size < 24) throw fail(`is not a GGUF model (only ${size} bytes)`);
    if ((await cursor.u32()) !== GGUF_MAGIC) throw fail("is not a GGUF model (bad magic number)");
    const version = await cursor.u32();
    if (version !== 2 && version !== 3) throw fail(`has unsupported GGUF version ${version}`);
    // Each tensor info takes at least 24 bytes and each key/value at least 13.
    const tensorCount = await cursor.count("tensor count", 24);
    const kvCount = await cursor.count("metadata count", 13);
    const metadata = new Map<string, GgufMetadataValue>();
    for (let i = 0; i < kvCount; i++) {
      const key = await cursor.string();
      const type = await cursor.valueType();
      if (type === "array") {
        const itemType = await cursor.valueType();
        if (itemType === "array") throw fail(`metadata ${key} is a nested array, which is not supported`);
        const length = await cursor.count(`length of ${key}`, GGUF_SCALAR_SIZES[itemType] ?? 8);
        const values: GgufMetadataValue[] = new Array(length);
        for (let j = 0; j < length; j++) values[j] = cursor.scalarSync(itemType) ?? (await cursor.scalar(itemType));
        metadata.set(key, values);
      } else {
        metadata.set(key, await cursor.scalar(type));
      }
    }
    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = await cursor.string();
      const dimCount = await cursor.u32();
      if (dimCount < 1 || dimCount > 4) throw fail(`is corrupt: tensor ${name} has ${dimCount} dimensions`);
      const dims: number[] = [];
      for (let d = 0; d < dimCount; d++) dims.push(await cursor.u64());
      const type = await cursor.u32();
      const offset = await cursor.u64();
      tensors.push({ name, dims, type, offset });
    }
    const alignmentValue = metadata.get("general.alignment");
    const alignment =
      typeof alignmentValue === "number" && alignmentValue > 0 ? alignmentValue : GGUF_DEFAULT_ALIGNMENT;
    const dataOffset = Math.ceil(cursor.position / alignment) * alignment;
    const headerSha256 = cursor.headerSha256();
    for (const tensor of tensors) {
      const typeSize = GGML_TYPE_SIZES[tensor.type];
      if (typeSize === undefined) continue;
      const elements = tensor.dims.reduce((product, dim) => product * dim, 1);
      const end = dataOffset + tensor.offset + Math.ceil(elements / typeSize.blockSize) * typeSize.blockBytes;
      if (end > size) {
        throw fail(`is truncated: tensor ${tensor.name} ends at byte ${end} but the file has ${size} bytes`);
      }
    }
    return { path, version, metadata, tensors, alignment, dataOffset, fileSize: size, headerSha256 };
  } finally {
    await file.close();
  }
}
