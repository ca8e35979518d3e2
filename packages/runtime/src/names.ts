import { TdistError } from "./errors/tdist-error.js";

const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export type NameKind = "namespace" | "component" | "endpoint";

/**
 * Validates a namespace, component or endpoint name: lower-case letters,
 * digits, `-` and `_`, starting with a letter or digit, at most 63 characters.
 */
export function validateName(kind: NameKind, name: unknown): string {
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    throw new TdistError(
      "invalid_name",
      `invalid ${kind} name ${JSON.stringify(name)}: use lower-case letters, digits, '-' and '_' (1-63 characters)`,
    );
  }
  return name;
}
