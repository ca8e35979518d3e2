import { describe, expect, it } from "vitest";
import { duplicatedKeys, topLevelKeys } from "./json-keys.js";

describe("json keys - test helper", () => {
  it("json keys - lists top-level keys only, duplicates kept", () => {
    expect(topLevelKeys('{"a":1,"b":{"a":2,"c":[{"d":"x,\\"y"}]},"a":3}')).toEqual(["a", "b", "a"]);
    expect(duplicatedKeys('{"pid":1,"x":"{\\"pid\\":2}","pid":3}')).toEqual(["pid"]);
    expect(duplicatedKeys('{"pid":1,"err":{"pid":2}}')).toEqual([]);
  });
});
