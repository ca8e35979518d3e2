import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { addRuntimeOptions, type RuntimeFlagValues, runtimeEnv } from "./runtime-flags.js";

function parse(args: string[], env: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const saved = { ...process.env };
  for (const key of Object.keys(process.env)) if (key.startsWith("TDIST_")) delete process.env[key];
  Object.assign(process.env, env);
  try {
    const command = addRuntimeOptions(new Command("x").exitOverride());
    command.parse(args, { from: "user" });
    return runtimeEnv(command, command.opts<RuntimeFlagValues>(), {});
  } finally {
    process.env = saved;
  }
}

describe("cli flags - runtime", () => {
  it("cli flags - defaults are the runtime's, written as TDIST_* for the runtime to read", () => {
    const env = parse([]);
    expect(env).toMatchObject({ TDIST_DISCOVERY: "memory", TDIST_EVENT_PLANE: "memory", TDIST_NAMESPACE: "tdist" });
  });

  it("cli flags - a flag overrides its variable", () => {
    expect(parse(["--namespace", "flag"], { TDIST_NAMESPACE: "variable" }).TDIST_NAMESPACE).toBe("flag");
    expect(parse([], { TDIST_NAMESPACE: "variable" }).TDIST_NAMESPACE).toBe("variable");
  });

  it("cli flags - giving a NATS URL turns the event plane to nats, unless the event plane was given too", () => {
    expect(parse(["--nats-url", "nats://10.0.0.1:4222"]).TDIST_EVENT_PLANE).toBe("nats");
    expect(parse([], { TDIST_NATS_URL: "nats://10.0.0.1:4222" }).TDIST_EVENT_PLANE).toBe("nats");
    expect(parse(["--nats-url", "nats://10.0.0.1:4222", "--event-plane", "memory"]).TDIST_EVENT_PLANE).toBe("memory");
  });

  it("cli flags - a namespace that is not a valid name is refused with invalid_option", () => {
    expect(() => parse(["--namespace", "Bad Name"])).toThrow(/--namespace must be/);
  });
});
