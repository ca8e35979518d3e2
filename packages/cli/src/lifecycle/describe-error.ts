import { TdistError } from "@tdist/runtime";

/** The one line a user sees when a command fails: the stable code first, then what to do. */
export function describeError(err: unknown): string {
  if (err instanceof TdistError) return `tdist: ${err.code}: ${err.message}`;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return code ? `tdist: ${code}: ${message}` : `tdist: ${message}`;
}

/** 2 for a usage or configuration error (what the user typed), 1 for anything else. */
export function exitCodeOf(err: unknown): number {
  return err instanceof TdistError && err.category === "bad_request" ? 2 : 1;
}
