import { InvalidArgumentError } from "commander";

export interface NumberRange {
  min?: number;
  max?: number;
  integer?: boolean;
}

/** Checks a numeric flag value; the message says what was expected (commander adds the flag's name). */
export function parseNumber(value: string, range: NumberRange = {}): number {
  const parsed = value.trim() === "" ? Number.NaN : Number(value);
  const min = range.min ?? Number.NEGATIVE_INFINITY;
  const max = range.max ?? Number.POSITIVE_INFINITY;
  if (
    !Number.isFinite(parsed) ||
    parsed < min ||
    parsed > max ||
    (range.integer === true && !Number.isInteger(parsed))
  ) {
    const bounds = [Number.isFinite(min) ? `>= ${min}` : "", Number.isFinite(max) ? `<= ${max}` : ""]
      .filter((part) => part !== "")
      .join(" and ");
    throw new InvalidArgumentError(
      `expected ${range.integer ? "an integer" : "a number"}${bounds ? ` ${bounds}` : ""}.`,
    );
  }
  return parsed;
}

/** A commander argument parser for a number in `range`. */
export function numberArg(range: NumberRange = {}): (value: string) => number {
  return (value) => parseNumber(value, range);
}
