import { TdistError } from "../errors/tdist-error.js";

/** One environment variable: its name, what it does, its default and its parser. */
export interface EnvVar<T> {
  readonly name: string;
  readonly doc: string;
  readonly defaultValue: T;
  parse(raw: string): T;
}

/** Reads `variable` from `env` (default `process.env`), falling back to its default. */
export function readEnv<T>(variable: EnvVar<T>, env: NodeJS.ProcessEnv = process.env): T {
  const raw = env[variable.name];
  if (raw === undefined || raw === "") return variable.defaultValue;
  return variable.parse(raw);
}

function invalid(name: string, raw: string, expected: string): TdistError {
  return new TdistError("invalid_option", `${name}=${JSON.stringify(raw)} is invalid: expected ${expected}`);
}

export function stringVar(name: string, defaultValue: string, doc: string): EnvVar<string> {
  return { name, doc, defaultValue, parse: (raw) => raw };
}

export function integerVar(
  name: string,
  defaultValue: number,
  doc: string,
  range: { min?: number; max?: number } = {},
): EnvVar<number> {
  const min = range.min ?? Number.MIN_SAFE_INTEGER;
  const max = range.max ?? Number.MAX_SAFE_INTEGER;
  return {
    name,
    doc,
    defaultValue,
    parse(raw) {
      const value = Number(raw);
      if (!Number.isInteger(value) || value < min || value > max) {
        throw invalid(name, raw, `an integer in [${min}, ${max}]`);
      }
      return value;
    },
  };
}

export function enumVar<const T extends string>(
  name: string,
  values: readonly T[],
  defaultValue: T,
  doc: string,
): EnvVar<T> {
  return {
    name,
    doc: `${doc} One of: ${values.join(", ")}.`,
    defaultValue,
    parse(raw) {
      if (!(values as readonly string[]).includes(raw)) throw invalid(name, raw, `one of ${values.join(", ")}`);
      return raw as T;
    },
  };
}

export function listVar(name: string, defaultValue: readonly string[], doc: string): EnvVar<readonly string[]> {
  return {
    name,
    doc: `${doc} Comma-separated.`,
    defaultValue,
    parse: (raw) =>
      raw
        .split(",")
        .map((part) => part.trim())
        .filter((part) => part.length > 0),
  };
}
