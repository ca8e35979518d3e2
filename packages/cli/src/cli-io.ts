/** Where a command writes: stdout for results, stderr for diagnostics. Tests pass their own. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}
