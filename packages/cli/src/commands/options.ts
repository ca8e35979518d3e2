import { isLlmRouterMode, LLM_ROUTER_MODES, type LlmRouterMode } from "@tdist/llm";
import { TdistError } from "@tdist/runtime";

/** Parses an optional numeric flag, naming the flag when the value is invalid. */
export function numberFlag(
  name: string,
  value: string | undefined,
  options: { min?: number; max?: number; integer?: boolean } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  const min = options.min ?? Number.NEGATIVE_INFINITY;
  const max = options.max ?? Number.POSITIVE_INFINITY;
  if (!Number.isFinite(parsed) || parsed < min || parsed > max || (options.integer && !Number.isInteger(parsed))) {
    const range = [Number.isFinite(min) ? ` >= ${min}` : "", Number.isFinite(max) ? ` <= ${max}` : ""]
      .filter((part) => part !== "")
      .join(" and");
    throw new TdistError(
      "invalid_option",
      `--${name} must be ${options.integer ? "an integer" : "a number"}${range}, got ${JSON.stringify(value)}`,
    );
  }
  return parsed;
}

export function parseRouterMode(value: string | undefined): LlmRouterMode {
  const mode = value ?? "round-robin";
  if (!isLlmRouterMode(mode)) {
    throw new TdistError(
      "invalid_option",
      `--router-mode must be one of ${LLM_ROUTER_MODES.join(", ")}, got ${JSON.stringify(mode)}`,
    );
  }
  return mode;
}
