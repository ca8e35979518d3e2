import { describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import { declaredEnvVars, declareEnvVars } from "./env-registry.js";
import { stringVar } from "./env-var.js";
import { allEnvVars } from "./environment.js";

describe("config - env registry", () => {
  it("config - variables another package declares are listed with the runtime's, with their owner", () => {
    const vars = declareEnvVars("test-package", {
      example: stringVar("TDIST_TEST_REGISTRY_EXAMPLE", "x", "A variable declared by a test package."),
    });
    expect(allEnvVars()).toContain(vars.example);
    expect(declaredEnvVars().find((entry) => entry.variable === vars.example)?.owner).toBe("test-package");
  });

  it("config - a name declared twice throws invalid_option naming both owners", () => {
    try {
      declareEnvVars("other-package", { again: stringVar("TDIST_NAMESPACE", "y", "A second TDIST_NAMESPACE.") });
      expect.unreachable();
    } catch (err) {
      expect(TdistError.is(err, "invalid_option")).toBe(true);
      expect((err as Error).message).toContain("@tdist/runtime");
    }
  });
});
