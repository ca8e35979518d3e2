import { readFileSync } from "node:fs";
import type { Logger } from "@tdist/runtime";
import { Command, CommanderError } from "commander";
import type { CliIo } from "./cli-io.js";
import type { CommandContext, CommandDefinition } from "./commands/command-context.js";
import { envCommand } from "./commands/env.js";
import { frontendCommand } from "./commands/frontend.js";
import { makeModelCommand } from "./commands/make-model.js";
import { runCommand } from "./commands/run.js";
import { statusCommand } from "./commands/status.js";
import { workerCommand } from "./commands/worker.js";
import { describeError, exitCodeOf } from "./lifecycle/describe-error.js";
import type { ServeOptions } from "./lifecycle/serve-until-signal.js";

export type { CliIo } from "./cli-io.js";

/** Every command, in the order `tdist --help` lists them. */
export const COMMANDS: readonly CommandDefinition[] = [
  runCommand,
  frontendCommand,
  workerCommand,
  statusCommand,
  envCommand,
  makeModelCommand,
];

const stdio: CliIo = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};

/** In-process overrides, for tests and wrappers. */
export interface CliOverrides {
  /** Serving lifecycle: no process.exit on a second signal, other signals. */
  serve?: Partial<Omit<ServeOptions, "io" | "logger">>;
  /** Use this logger instead of building one from --log-level/--log-format. */
  logger?: Logger;
}

function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return manifest.version;
}

/** The `tdist` program: commander with every command of the registry, writing to `io`. */
export function createProgram(context: CommandContext): Command {
  const trim = (text: string): string => text.replace(/\n$/, "");
  const program = new Command("tdist")
    .description("tdist: distributed inference serving (OpenAI API, KV-aware routing, llama.cpp, mocker)")
    .version(packageVersion(), "-v, --version")
    .exitOverride()
    .configureOutput({ writeOut: (text) => context.io.out(trim(text)), writeErr: (text) => context.io.err(trim(text)) })
    .showHelpAfterError("(tdist <command> --help lists every flag)")
    .showSuggestionAfterError(true)
    .addHelpText(
      "after",
      "\nEvery flag with an (env: TDIST_*) variable can also be set through it; `tdist env` lists them all.",
    );
  for (const definition of COMMANDS) definition.register(program, context);
  for (const command of program.commands) command.copyInheritedSettings(program);
  return program;
}

/** Runs one CLI invocation; returns the exit code (0 ok, 1 failed, 2 usage or configuration error). */
export async function runCli(argv: string[], io: CliIo = stdio, overrides: CliOverrides = {}): Promise<number> {
  const context: CommandContext = {
    io,
    exitCode: 0,
    ...(overrides.serve ? { serve: overrides.serve } : {}),
    ...(overrides.logger ? { logger: overrides.logger } : {}),
  };
  const program = createProgram(context);
  try {
    await program.parseAsync(argv, { from: "user" });
    return context.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end here too, with exit code 0; commander already wrote what to say.
      return err.exitCode === 0 ? 0 : 2;
    }
    io.err(describeError(err));
    return exitCodeOf(err);
  }
}
