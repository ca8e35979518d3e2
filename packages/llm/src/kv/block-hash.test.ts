import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { BLOCK_HASH_SEED, chainBlockHash, computeBlockHashes, hashTokenBlock, parseBlockHash } from "./block-hash.js";

// Golden values computed with the reference C library (libxxhash 0.8.1,
// XXH3_64bits_withSeed, seed 1337) over the byte layout the module documents.
// They pin the wire contract: a change here breaks routing across versions.
const GOLDEN = {
  local0: "cb38e4d7fb2dca5c", // LE32(1, 2, 3, 4)
  local1: "e8d3ec39b907b74c", // LE32(5, 6, 7, 8)
  seq1: "9e33d4af12f49f37", // LE64(local0) ++ LE32(5, 6, 7, 8)
  extremes: "fa08b6152f471072", // LE32(4294967295, 0, 70000, 151643)
};

describe("block-hash", () => {
  it("block-hash - seed is 1337", () => {
    expect(BLOCK_HASH_SEED).toBe(1337n);
  });

  it("block-hash - matches the reference xxh3-64 values and chaining", () => {
    const blocks = computeBlockHashes([1, 2, 3, 4, 5, 6, 7, 8, 9], 4);
    expect(blocks).toEqual([
      { blockHash: GOLDEN.local0, tokensHash: GOLDEN.local0 },
      { blockHash: GOLDEN.seq1, tokensHash: GOLDEN.local1 },
    ]);
    expect(hashTokenBlock([4294967295, 0, 70000, 151643]).toString(16).padStart(16, "0")).toBe(GOLDEN.extremes);
  });

  it("block-hash - returns full blocks only", () => {
    expect(computeBlockHashes([1, 2, 3], 4)).toEqual([]);
    expect(computeBlockHashes([], 4)).toEqual([]);
    expect(
      computeBlockHashes(
        Array.from({ length: 47 }, (_, i) => i),
        16,
      ),
    ).toHaveLength(2);
    expect(
      computeBlockHashes(
        Array.from({ length: 48 }, (_, i) => i),
        16,
      ),
    ).toHaveLength(3);
  });

  it("block-hash - hex is lower-case and 16 digits", () => {
    for (const block of computeBlockHashes(
      Array.from({ length: 256 }, (_, i) => i * 7),
      4,
    )) {
      expect(block.blockHash).toMatch(/^[0-9a-f]{16}$/);
      expect(block.tokensHash).toMatch(/^[0-9a-f]{16}$/);
    }
  });

  it("block-hash - chainBlockHash extends a sequence one block at a time", () => {
    const tokens = Array.from({ length: 64 }, (_, i) => (i * 2654435761) % 100_000);
    const all = computeBlockHashes(tokens, 16);
    let parent: string | null = null;
    for (let b = 0; b < all.length; b++) {
      const block = chainBlockHash(parent, tokens.slice(b * 16, (b + 1) * 16));
      expect(block).toEqual(all[b]);
      parent = block.blockHash;
    }
  });

  it("block-hash - same block tokens after different prefixes share tokensHash, not blockHash", () => {
    const a = computeBlockHashes([1, 1, 1, 1, 9, 9, 9, 9], 4);
    const b = computeBlockHashes([2, 2, 2, 2, 9, 9, 9, 9], 4);
    expect(a[1]?.tokensHash).toBe(b[1]?.tokensHash);
    expect(a[1]?.blockHash).not.toBe(b[1]?.blockHash);
  });

  it("block-hash - a shared prefix gives shared leading hashes", () => {
    const a = computeBlockHashes([1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13], 4);
    const b = computeBlockHashes([1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23], 4);
    expect(a.slice(0, 2)).toEqual(b.slice(0, 2));
    expect(a[2]?.blockHash).not.toBe(b[2]?.blockHash);
  });

  it("block-hash - accepts typed arrays", () => {
    const tokens = [5, 6, 7, 8, 9, 10, 11, 12];
    expect(computeBlockHashes(Uint32Array.from(tokens), 4)).toEqual(computeBlockHashes(tokens, 4));
  });

  it("block-hash - parseBlockHash round-trips", () => {
    expect(parseBlockHash(GOLDEN.seq1)).toBe(0x9e33d4af12f49f37n);
    expect(() => parseBlockHash("XYZ")).toThrow(TdistError);
  });

  it("block-hash - rejects invalid block sizes and token ids", () => {
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (err) {
        return TdistError.is(err) ? err.code : "not-a-tdist-error";
      }
      return undefined;
    };
    expect(code(() => computeBlockHashes([1, 2], 0))).toBe("invalid_option");
    expect(code(() => computeBlockHashes([1, 2], 1.5))).toBe("invalid_option");
    expect(code(() => computeBlockHashes([1, -2], 2))).toBe("bad_request");
    expect(code(() => computeBlockHashes([1, 2 ** 32], 2))).toBe("bad_request");
    expect(code(() => computeBlockHashes([1, 0.5], 2))).toBe("bad_request");
  });
});
