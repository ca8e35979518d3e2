import { readFileSync } from "node:fs";
import { TdistError } from "../errors/tdist-error.js";
import { type EnvVar, readEnv } from "./env-var.js";

/**
 * A secret from its variable or from the file its `_FILE` twin names (a
 * mounted secret; one trailing newline dropped). Undefined when neither is
 * set; `invalid_option` when both are, or the file cannot be read. Messages
 * name the variables and the file, never the value.
 */
export function readSecretEnv(value: EnvVar<string>, file: EnvVar<string>, env: NodeJS.ProcessEnv): string | undefined {
  const direct = readEnv(value, env);
  const path = readEnv(file, env);
  if (direct !== "" && path !== "") {
    throw new TdistError("invalid_option", `${value.name} and ${file.name} are both set; set one`);
  }
  if (direct !== "") return direct;
  if (path === "") return undefined;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new TdistError(
      "invalid_option",
      `${file.name}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      { cause: err },
    );
  }
  const secret = text.replace(/\r?\n$/, "");
  if (secret === "") throw new TdistError("invalid_option", `${file.name}: ${path} is empty`);
  return secret;
}

/** A plain variable, undefined when unset or empty. */
export function optionalEnv(variable: EnvVar<string>, env: NodeJS.ProcessEnv): string | undefined {
  const raw = readEnv(variable, env);
  return raw === "" ? undefined : raw;
}
