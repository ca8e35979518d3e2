/**
 * GGUF file format constants shared by the writer and the reader
 * (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
 */

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types, as numbered in the file. */
export const GgufValueType = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;

export type GgufValueTypeName = keyof typeof GgufValueType;
export type GgufScalarTypeName = Exclude<GgufValueTypeName, "array">;

/** A metadata value as the reader returns it (u64/i64 as bigint only when they do not fit a double exactly). */
export type GgufMetadataValue = number | bigint | boolean | string | GgufMetadataValue[];

/** Byte size of fixed-size scalar value types (strings and arrays are variable). */
export const GGUF_SCALAR_SIZES: Partial<Record<GgufValueTypeName, number>> = {
  uint8: 1,
  int8: 1,
  uint16: 2,
  int16: 2,
  uint32: 4,
  int32: 4,
  float32: 4,
  bool: 1,
  uint64: 8,
  int64: 8,
  float64: 8,
};

/**
 * ggml tensor types the reader knows the size of: block size in elements and
 * bytes per block. Others are accepted but their data size is not checked.
 */
export const GGML_TYPE_SIZES: Record<number, { name: string; blockSize: number; blockBytes: number }> = {
  0: { name: "F32", blockSize: 1, blockBytes: 4 },
  1: { name: "F16", blockSize: 1, blockBytes: 2 },
  2: { name: "Q4_0", blockSize: 32, blockBytes: 18 },
  3: { name: "Q4_1", blockSize: 32, blockBytes: 20 },
  6: { name: "Q5_0", blockSize: 32, blockBytes: 22 },
  7: { name: "Q5_1", blockSize: 32, blockBytes: 24 },
  8: { name: "Q8_0", blockSize: 32, blockBytes: 34 },
  9: { name: "Q8_1", blockSize: 32, blockBytes: 36 },
  10: { name: "Q2_K", blockSize: 256, blockBytes: 84 },
  11: { name: "Q3_K", blockSize: 256, blockBytes: 110 },
  12: { name: "Q4_K", blockSize: 256, blockBytes: 144 },
  13: { name: "Q5_K", blockSize: 256, blockBytes: 176 },
  14: { name: "Q6_K", blockSize: 256, blockBytes: 210 },
  15: { name: "Q8_K", blockSize: 256, blockBytes: 292 },
  24: { name: "I8", blockSize: 1, blockBytes: 1 },
  25: { name: "I16", blockSize: 1, blockBytes: 2 },
  26: { name: "I32", blockSize: 1, blockBytes: 4 },
  27: { name: "I64", blockSize: 1, blockBytes: 8 },
  28: { name: "F64", blockSize: 1, blockBytes: 8 },
  30: { name: "BF16", blockSize: 1, blockBytes: 2 },
};

export const GGML_TYPE_F32 = 0;

/** llama.cpp token types (`tokenizer.ggml.token_type`). */
export const LlamaTokenType = {
  normal: 1,
  unknown: 2,
  control: 3,
  userDefined: 4,
  unused: 5,
  byte: 6,
} as const;
