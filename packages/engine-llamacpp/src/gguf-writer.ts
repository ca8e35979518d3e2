import { open } from "node:fs/promises";
import { TdistError } from "@tdist/runtime";
import {
  GGML_TYPE_F32,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  type GgufScalarTypeName,
  GgufValueType,
} from "./gguf-types.js";

type ScalarValue = number | bigint | boolean | string;

interface MetadataEntry {
  key: string;
  type: GgufScalarTypeName | "array";
  itemType?: GgufScalarTypeName;
  value: ScalarValue | readonly ScalarValue[];
}

interface TensorEntry {
  name: string;
  /** ggml order: `dims[0]` is the contiguous (fastest-moving) dimension. */
  dims: number[];
  elements: number;
  /** Fills the tensor's values; called once, while writing. */
  fill: (out: Float32Array) => void;
  offset: number;
}

/** A growable little-endian byte buffer. */
class ByteSink {
  #buffer = Buffer.alloc(1 << 16);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  bytes(): Buffer {
    return this.#buffer.subarray(0, this.#length);
  }

  #reserve(extra: number): number {
    const at = this.#length;
    if (at + extra > this.#buffer.length) {
      const grown = Buffer.alloc(Math.max(this.#buffer.length * 2, at + extra));
      this.#buffer.copy(grown, 0, 0, at);
      this.#buffer = grown;
    }
    this.#length = at + extra;
    return at;
  }

  u8(value: number): void {
    const at = this.#reserve(1);
    this.#buffer.writeUInt8(value, at);
  }
  i8(value: number): void {
    const at = this.#reserve(1);
    this.#buffer.writeInt8(value, at);
  }
  u16(value: number): void {
    const at = this.#reserve(2);
    this.#buffer.writeUInt16LE(value, at);
  }
  i16(value: number): void {
    const at = this.#reserve(2);
    this.#buffer.writeInt16LE(value, at);
  }
  u32(value: number): void {
    const at = this.#reserve(4);
    this.#buffer.writeUInt32LE(value, at);
  }
  i32(value: number): void {
    const at = this.#reserve(4);
    this.#buffer.writeInt32LE(value, at);
  }
  f32(value: number): void {
    const at = this.#reserve(4);
    this.#buffer.writeFloatLE(value, at);
  }
  f64(value: number): void {
    const at = this.#reserve(8);
    this.#buffer.writeDoubleLE(value, at);
  }
  u64(value: number | bigint): void {
    const at = this.#reserve(8);
    this.#buffer.writeBigUInt64LE(BigInt(value), at);
  }
  i64(value: number | bigint): void {
    const at = this.#reserve(8);
    this.#buffer.writeBigInt64LE(BigInt(value), at);
  }
  string(value: string): void {
    const length = Buffer.byteLength(value, "utf8");
    this.u64(length);
    const at = this.#reserve(length);
    this.#buffer.write(value, at, length, "utf8");
  }
  padTo(alignment: number): void {
    const pad = (alignment - (this.#length % alignment)) % alignment;
    const at = this.#reserve(pad);
    this.#buffer.fill(0, at, this.#length);
  }
}

function writeScalar(sink: ByteSink, type: GgufScalarTypeName, value: ScalarValue, key: string): void {
  const numeric = (): number => {
    if (typeof value !== "number") throw new TdistError("bad_request", `GGUF key ${key}: expected a number`);
    return value;
  };
  switch (type) {
    case "uint8":
      sink.u8(numeric());
      return;
    case "int8":
      sink.i8(numeric());
      return;
    case "uint16":
      sink.u16(numeric());
      return;
    case "int16":
      sink.i16(numeric());
      return;
    case "uint32":
      sink.u32(numeric());
      return;
    case "int32":
      sink.i32(numeric());
      return;
    case "float32":
      sink.f32(numeric());
      return;
    case "float64":
      sink.f64(numeric());
      return;
    case "uint64":
      sink.u64(typeof value === "bigint" ? value : numeric());
      return;
    case "int64":
      sink.i64(typeof value === "bigint" ? value : numeric());
      return;
    case "bool":
      if (typeof value !== "boolean") throw new TdistError("bad_request", `GGUF key ${key}: expected a boolean`);
      sink.u8(value ? 1 : 0);
      return;
    case "string":
      if (typeof value !== "string") throw new TdistError("bad_request", `GGUF key ${key}: expected a string`);
      sink.string(value);
      return;
  }
}

/**
 * Writes GGUF v3 files: metadata key/values, tensor infos, then F32 tensor
 * data, each tensor aligned to 32 bytes (little-endian throughout).
 *
 * ```ts
 * const writer = new GgufWriter();
 * writer.addString("general.architecture", "llama");
 * writer.addUint32("llama.block_count", 2);
 * writer.addTensor("output_norm.weight", [64], (out) => out.fill(1));
 * await writer.write("model.gguf");
 * ```
 */
export class GgufWriter {
  readonly #metadata: MetadataEntry[] = [];
  readonly #keys = new Set<string>();
  readonly #tensors: TensorEntry[] = [];
  readonly #alignment = GGUF_DEFAULT_ALIGNMENT;
  /** Size of the data section, as laid out by the last `#header()`. */
  #dataBytes = 0;

  #add(entry: MetadataEntry): this {
    if (this.#keys.has(entry.key)) throw new TdistError("bad_request", `GGUF key ${entry.key} added twice`);
    this.#keys.add(entry.key);
    this.#metadata.push(entry);
    return this;
  }

  addUint32(key: string, value: number): this {
    return this.#add({ key, type: "uint32", value });
  }
  addInt32(key: string, value: number): this {
    return this.#add({ key, type: "int32", value });
  }
  addFloat32(key: string, value: number): this {
    return this.#add({ key, type: "float32", value });
  }
  addUint64(key: string, value: number | bigint): this {
    return this.#add({ key, type: "uint64", value });
  }
  addBool(key: string, value: boolean): this {
    return this.#add({ key, type: "bool", value });
  }
  addString(key: string, value: string): this {
    return this.#add({ key, type: "string", value });
  }
  addArray(key: string, itemType: GgufScalarTypeName, values: readonly ScalarValue[]): this {
    return this.#add({ key, type: "array", itemType, value: values });
  }

  /**
   * Adds an F32 tensor. `dims` are in ggml order (`dims[0]` contiguous): a
   * linear layer mapping `n_in` to `n_out` is `[n_in, n_out]`.
   */
  addTensor(name: string, dims: number[], fill: (out: Float32Array) => void): this {
    if (this.#tensors.some((tensor) => tensor.name === name)) {
      throw new TdistError("bad_request", `GGUF tensor ${name} added twice`);
    }
    if (dims.length === 0 || dims.length > 4 || dims.some((dim) => !Number.isInteger(dim) || dim <= 0)) {
      throw new TdistError("bad_request", `GGUF tensor ${name}: invalid dims ${JSON.stringify(dims)}`);
    }
    const elements = dims.reduce((product, dim) => product * dim, 1);
    this.#tensors.push({ name, dims: [...dims], elements, fill, offset: 0 });
    return this;
  }

  /** The header, metadata and tensor infos, padded to the data section's alignment. */
  #header(): Buffer {
    const sink = new ByteSink();
    sink.u32(GGUF_MAGIC);
    sink.u32(GGUF_VERSION);
    sink.u64(this.#tensors.length);
    sink.u64(this.#metadata.length);
    for (const entry of this.#metadata) {
      sink.string(entry.key);
      sink.u32(GgufValueType[entry.type]);
      if (entry.type === "array") {
        const itemType = entry.itemType as GgufScalarTypeName;
        const values = entry.value as readonly ScalarValue[];
        sink.u32(GgufValueType[itemType]);
        sink.u64(values.length);
        for (const value of values) writeScalar(sink, itemType, value, entry.key);
      } else {
        writeScalar(sink, entry.type, entry.value as ScalarValue, entry.key);
      }
    }
    let offset = 0;
    for (const tensor of this.#tensors) {
      tensor.offset = offset;
      sink.string(tensor.name);
      sink.u32(tensor.dims.length);
      for (const dim of tensor.dims) sink.u64(dim);
      sink.u32(GGML_TYPE_F32);
      sink.u64(offset);
      offset += Math.ceil((tensor.elements * 4) / this.#alignment) * this.#alignment;
    }
    this.#dataBytes = offset;
    sink.padTo(this.#alignment);
    return sink.bytes();
  }

  /**
   * Writes the file (overwriting `path`); returns its size in bytes.
   * `onProgress` hears the bytes written so far after the header and after
   * each tensor, the last time with all of them.
   */
  async write(
    path: string,
    options: { onProgress?: (progress: { bytes: number; totalBytes: number }) => void } = {},
  ): Promise<number> {
    if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
      throw new TdistError("internal", "GGUF writing needs a little-endian machine");
    }
    const header = this.#header();
    // The header ends aligned and every tensor's slot is a multiple of the alignment.
    const totalBytes = header.length + this.#dataBytes;
    const report = (bytes: number): void => options.onProgress?.({ bytes, totalBytes });
    const file = await open(path, "w");
    try {
      let position = 0;
      const put = async (bytes: Uint8Array): Promise<void> => {
        let written = 0;
        while (written < bytes.length) {
          const { bytesWritten } = await file.write(bytes, written, bytes.length - written, position + written);
          written += bytesWritten;
        }
        position += bytes.length;
      };
      await put(header);
      report(position);
      const dataStart = position;
      for (const tensor of this.#tensors) {
        const padding = dataStart + tensor.offset - position;
        if (padding > 0) await put(new Uint8Array(padding));
        const values = new Float32Array(tensor.elements);
        tensor.fill(values);
        // The machine is little-endian (checked above), like GGUF.
        await put(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
        if (tensor !== this.#tensors.at(-1)) report(position);
      }
      const tail = (this.#alignment - (position % this.#alignment)) % this.#alignment;
      if (tail > 0) await put(new Uint8Array(tail));
      report(position);
      return position;
    } finally {
      await file.close();
    }
  }
}
