import { allEnvVars } from "@tdist/runtime";

/** `tdist env`: every TDIST_* variable with its default and documentation. */
export function formatEnv(): string {
  return allEnvVars()
    .map((v) => {
      const value = Array.isArray(v.defaultValue) ? v.defaultValue.join(",") : String(v.defaultValue);
      return `${v.name}=${value}\n    ${v.doc}`;
    })
    .join("\n");
}
