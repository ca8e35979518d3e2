import { type EnvVar, TdistError } from "@tdist/runtime";
import { InvalidArgumentError, Option } from "commander";

/** How a default shows in `--help` (lists comma-joined, empty strings hidden). */
function shown(value: unknown): string | undefined {
  if (Array.isArray(value)) return value.join(",");
  if (value === "") return undefined;
  return String(value);
}

/**
 * A flag backed by a `TDIST_*` variable: the flag wins over the variable,
 * the variable over the default, and all three are parsed by the variable's
 * own parser, so a value is checked the same way wherever it comes from.
 * `--help` shows the default and the variable's name.
 */
export function envOption<T>(flags: string, description: string, variable: EnvVar<T>, defaultValue?: T): Option {
  const fallback = defaultValue ?? variable.defaultValue;
  const option = new Option(flags, description).env(variable.name).argParser((raw: string) => {
    try {
      return variable.parse(raw);
    } catch (err) {
      if (err instanceof TdistError) throw new InvalidArgumentError(err.message.replace(/^.*? is invalid: /, ""));
      throw err;
    }
  });
  const display = shown(fallback);
  return display === undefined ? option : option.default(fallback, display);
}
