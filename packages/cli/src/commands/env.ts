import { Command } from "commander";
import type { CommandDefinition } from "./command-context.js";
import { formatEnv } from "./format-env.js";

/** `tdist env`: every `TDIST_*` variable with its default and what it does. */
export const envCommand: CommandDefinition = {
  name: "env",
  register(program, context) {
    program.addCommand(
      new Command("env").summary("every TDIST_* environment variable with its default").action(() => {
        context.io.out(formatEnv());
        context.exitCode = 0;
      }),
    );
  },
};
