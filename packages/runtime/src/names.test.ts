import { describe, expect, it } from "vitest";
import { TdistError } from "./errors/tdist-error.js";
import { validateName } from "./names.js";

describe("names - validation", () => {
  it("names - accepts lower-case letters, digits, dash and underscore", () => {
    for (const name of ["tdist", "backend-1", "prefill_worker", "0abc"])
      expect(validateName("component", name)).toBe(name);
  });

  it("names - rejects anything else with invalid_name naming the bad name", () => {
    for (const name of ["", "Backend", "a.b", "a/b", "-lead", "x".repeat(64), 42]) {
      try {
        validateName("endpoint", name);
        expect.unreachable();
      } catch (err) {
        expect(TdistError.is(err, "invalid_name")).toBe(true);
        expect((err as Error).message).toContain(`endpoint name ${JSON.stringify(name)}`);
      }
    }
  });
});
