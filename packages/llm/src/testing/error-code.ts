import { TdistError } from "@tdist/runtime";

/** The `TdistError` code `fn` throws: undefined when it does not throw, "not-a-tdist-error" for other errors. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return TdistError.is(err) ? err.code : "not-a-tdist-error";
  }
  return undefined;
}
