import { isLlmRouterMode, LLM_ROUTER_MODES, type LlmRouterMode } from "@tdist/llm";
import { TdistError } from "@tdist/runtime";

/** Parses an optional numeric flag, naming the flag when the value is invalid. */
export function numberFlag(
  name: string,
  value: string | undefined,
  options: { min?: number; integer?: boolean } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  const min = options.min ?? Number.NEGATIVE_INFINITY;
  if (!Number.isFinite(parsed) || parsed < min || (options.integer && !Number.isInteger(parsed))) {
    throw new TdistError(
      "invalid_option",
      `--${name} must be ${options.integer ? "an integer" : "a number"}${Number.isFinite(min) ? ` >= ${min}` : ""}, got ${JSON.stringify(value)}`,
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
