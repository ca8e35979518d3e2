import { describe, expect, it } from "vitest";
import { StopStringMatcher } from "./stop-string-matcher.js";

/** Feeds deltas until a stop; returns everything emitted (flushed at the end). */
function run(stops: string[], deltas: string[]): { text: string; stop: string | undefined } {
  const matcher = new StopStringMatcher(stops);
  let text = "";
  for (const delta of deltas) {
    const result = matcher.push(delta);
    text += result.emit;
    if (result.stopped) return { text, stop: result.stop };
  }
  return { text: text + matcher.flush(), stop: undefined };
}

describe("stop string matcher", () => {
  it("stop string matcher - holds back a stop string split across deltas and never emits it", () => {
    const matcher = new StopStringMatcher(["STOP"]);
    expect(matcher.push("abcST")).toEqual({ emit: "abc", stopped: false });
    expect(matcher.held).toBe("ST");
    expect(matcher.push("O")).toEqual({ emit: "", stopped: false });
    expect(matcher.push("P and more")).toEqual({ emit: "", stopped: true, stop: "STOP" });
    expect(matcher.push("later")).toEqual({ emit: "", stopped: true, stop: "STOP" });
    expect(matcher.flush()).toBe("");
  });

  it("stop string matcher - releases held text once it cannot start a stop string", () => {
    const matcher = new StopStringMatcher(["STOP"]);
    expect(matcher.push("xST").emit).toBe("x");
    expect(matcher.push("x").emit).toBe("STx");
    expect(matcher.push("S").emit).toBe("");
    expect(matcher.flush()).toBe("S");
    expect(matcher.stopped).toBe(false);
  });

  it("stop string matcher - emits text before a stop found inside one delta", () => {
    expect(run(["\nUser:"], ["Sure.\nUser: next"])).toEqual({ text: "Sure.", stop: "\nUser:" });
    expect(run(["\nUser:"], ["Sure.", "\n", "Us", "er", ":", " next"])).toEqual({ text: "Sure.", stop: "\nUser:" });
  });

  it("stop string matcher - handles stop strings whose prefixes overlap the text", () => {
    // "aab" inside "aaab": the first "a" is text, the rest is the stop string.
    expect(run(["aab"], ["a", "a", "a", "b", "c"])).toEqual({ text: "a", stop: "aab" });
    // "abc" is held as a prefix of "abcd", then "bcx" completes inside it.
    expect(run(["abcd", "bcx"], ["ab", "c", "x"])).toEqual({ text: "a", stop: "bcx" });
    // A stop string that repeats its own prefix.
    expect(run(["abab"], ["aba", "bab"])).toEqual({ text: "", stop: "abab" });
    expect(run(["abab"], ["ab", "ac", "abab"])).toEqual({ text: "abac", stop: "abab" });
  });

  it("stop string matcher - with several stop strings the earliest match wins", () => {
    expect(run(["world", "lo"], ["hello world"])).toEqual({ text: "hel", stop: "lo" });
    expect(run(["world", "lo"], ["hel", "lo world"])).toEqual({ text: "hel", stop: "lo" });
    expect(run(["ab", "abc"], ["xabc"])).toEqual({ text: "x", stop: "abc" });
    expect(run(["END", "\n\n"], ["one\n", "\ntwo END"])).toEqual({ text: "one", stop: "\n\n" });
  });

  it("stop string matcher - handles non-ASCII stop strings", () => {
    expect(run(["。", "🛑"], ["你好", "🛑", "世界"])).toEqual({ text: "你好", stop: "🛑" });
    expect(run(["结束了"], ["好的", "结束", "吧"])).toEqual({ text: "好的结束吧", stop: undefined });
  });

  it("stop string matcher - passes text through without stop strings", () => {
    const matcher = new StopStringMatcher(["", ""]);
    expect(matcher.stops).toEqual([]);
    expect(matcher.push("anything")).toEqual({ emit: "anything", stopped: false });
    expect(matcher.flush()).toBe("");
  });

  it("stop string matcher - holds at most the longest stop string minus one character", () => {
    const matcher = new StopStringMatcher(["0123456789"]);
    let emitted = "";
    for (const char of "012345678".repeat(3)) {
      emitted += matcher.push(char).emit;
      expect(matcher.held.length).toBeLessThanOrEqual(9);
    }
    expect(emitted + matcher.flush()).toBe("012345678".repeat(3));
  });
});
