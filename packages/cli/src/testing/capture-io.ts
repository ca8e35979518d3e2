import type { CliIo } from "../cli-io.js";

/** A CliIo that keeps what a command wrote, for assertions. */
export class CaptureIo implements CliIo {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  out = (text: string): void => {
    this.stdout.push(text);
  };
  err = (text: string): void => {
    this.stderr.push(text);
  };
  get all(): string {
    return [...this.stdout, ...this.stderr].join("\n");
  }
}
