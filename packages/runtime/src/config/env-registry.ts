import { TdistError } from "../errors/tdist-error.js";
import type { EnvVar } from "./env-var.js";

interface Declared {
  readonly owner: string;
  readonly variable: EnvVar<unknown>;
}

const declared = new Map<string, Declared>();

/**
 * Declares the `TDIST_*` variables a package owns, in the one registry that
 * `allEnvVars()` (and so `tdist env`) lists. A name declared twice, by the
 * same package or another, is a programming error and throws at import time.
 *
 * ```ts
 * export const CliEnv = declareEnvVars("tdist", {
 *   logFormat: enumVar("TDIST_LOG_FORMAT", ["auto", "pretty", "json"], "auto", "Log line format."),
 * });
 * ```
 */
export function declareEnvVars<const T extends Record<string, EnvVar<unknown>>>(owner: string, variables: T): T {
  for (const variable of Object.values(variables)) {
    const previous = declared.get(variable.name);
    if (previous) {
      throw new TdistError(
        "invalid_option",
        `${variable.name} is declared twice (by ${previous.owner} and by ${owner}); each variable is declared once`,
      );
    }
    declared.set(variable.name, { owner, variable });
  }
  return variables;
}

/** Every declared variable with the package that owns it, in declaration order. */
export function declaredEnvVars(): readonly Declared[] {
  return [...declared.values()];
}
