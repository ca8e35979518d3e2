import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { stateTokens, withStreamCount } from "./kv-state-file.js";

/** A state file as llama.cpp writes it: header, tokens, stream count, one non-empty stream at `at`. */
function stateFile(tokens: number[], streams: number, at: number, section: number[]): Uint8Array {
  const words = [0x67677371, 3, tokens.length, ...tokens, streams];
  for (let s = 0; s < streams; s++) words.push(...(s === at ? section : [0]));
  return new Uint8Array(Uint32Array.from(words).buffer);
}

describe("kv state file", () => {
  it("kv state file - narrows and widens the stream count around the one non-empty stream", () => {
    const section = [2, 11, 22, 33, 44];
    const eight = stateFile([5, 6], 8, 3, section);
    const one = withStreamCount(eight, 1);
    expect(one).toEqual(stateFile([5, 6], 1, 0, section));
    expect(withStreamCount(one, 4)).toEqual(stateFile([5, 6], 4, 0, section));
    expect(stateTokens(one)).toEqual([5, 6]);
  });

  it("kv state file - an empty state keeps only empty streams", () => {
    const empty = stateFile([], 2, -1, []);
    expect(withStreamCount(empty, 3)).toEqual(stateFile([], 3, -1, []));
  });

  it("kv state file - anything else is a bad_request", () => {
    const bad = [
      new Uint8Array(8),
      stateFile([1], 2, 0, [1, 9]).slice(0, 20),
      new Uint8Array(Uint32Array.from([0x67677371, 3, 0, 2, 1, 7, 1, 7]).buffer),
    ];
    for (const file of bad) {
      expect(() => withStreamCount(file, 1)).toThrow(TdistError);
    }
  });
});
