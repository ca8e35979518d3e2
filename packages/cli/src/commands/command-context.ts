import type { Logger } from "@tdist/runtime";
import type { Command } from "commander";
import type { CliIo } from "../cli-io.js";
import type { ServeOptions } from "../lifecycle/serve-until-signal.js";

/** What every command's action gets: where to write, and where to put its exit code. */
export interface CommandContext {
  readonly io: CliIo;
  /** Set by the command's action; `runCli` returns it. */
  exitCode: number;
  /** Overrides for the serving lifecycle (tests: no process.exit, no process signals). */
  readonly serve?: Partial<Omit<ServeOptions, "io" | "logger">>;
  /** Replaces the logger the command would build (tests). */
  readonly logger?: Logger;
}

/** A command of the registry: its name and how it adds itself to the program. */
export interface CommandDefinition {
  readonly name: string;
  register(program: Command, context: CommandContext): void;
}
