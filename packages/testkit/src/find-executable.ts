import { accessSync, constants } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";

/**
 * Debian installs some servers (nats-server) under sbin, which a non-root
 * user's PATH often leaves out.
 */
const systemDirs = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/**
 * The path of the executable `name`: `name` itself when it contains a slash,
 * else the first match on PATH, then in the system bin and sbin directories.
 */
export function findExecutable(name: string, pathVariable = process.env.PATH ?? ""): string | undefined {
  const dirs = [...pathVariable.split(delimiter).filter(Boolean), ...systemDirs];
  const candidates = isAbsolute(name) || name.includes("/") ? [name] : dirs.map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}
