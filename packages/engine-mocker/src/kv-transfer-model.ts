/** The shape of a transformer's KV cache, for the bytes one token of it takes. */
export interface KvCacheShape {
  layers: number;
  kvHeads: number;
  headDim: number;
  /** Bytes per element: 2 for fp16/bf16, 1 for fp8. */
  bytesPerElement: number;
}

/**
 * A Llama-3.1-8B-like cache (32 layers, 8 KV heads of 128, fp16): the model
 * size the default timing model is shaped after.
 */
export const DEFAULT_KV_CACHE_SHAPE: Readonly<KvCacheShape> = Object.freeze({
  layers: 32,
  kvHeads: 8,
  headDim: 128,
  bytesPerElement: 2,
});

/** Bytes of KV cache per token: layers x 2 (K and V) x KV heads x head dim x element size. */
export function kvBytesPerToken(shape: KvCacheShape): number {
  return shape.layers * 2 * shape.kvHeads * shape.headDim * shape.bytesPerElement;
}

/** 131072 (128 KiB), from {@link DEFAULT_KV_CACHE_SHAPE}. */
export const DEFAULT_KV_BYTES_PER_TOKEN = kvBytesPerToken(DEFAULT_KV_CACHE_SHAPE);

/** Gigabytes per second between a prefill and a decode worker: Dynamo's mocker default (an RDMA-class link). */
export const DEFAULT_KV_TRANSFER_GBPS = 64;

/**
 * Simulated ms to move `tokens` tokens of KV cache at `gbps` gigabytes
 * (10^9 bytes) per second, before the speed-up; 0 when the bandwidth is 0
 * (transfer time not simulated).
 */
export function kvTransferMs(tokens: number, bytesPerToken: number, gbps: number): number {
  if (gbps <= 0) return 0;
  return (tokens * bytesPerToken) / (gbps * 1e6);
}
