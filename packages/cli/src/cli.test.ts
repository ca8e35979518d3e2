import { silentLogger } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { COMMANDS, runCli } from "./cli.js";
import { CaptureIo } from "./testing/capture-io.js";

/** Runs the CLI in-process, never serving: every case here must fail or finish before anything starts. */
async function cli(args: string[]): Promise<{ code: number; io: CaptureIo }> {
  const io = new CaptureIo();
  const code = await runCli(args, io, { logger: silentLogger, serve: { signals: [], forceExit: () => {} } });
  return { code, io };
}

describe("cli - help, version and typos", () => {
  it("cli - --version prints the package version", async () => {
    const { code, io } = await cli(["--version"]);
    expect(code).toBe(0);
    expect(io.stdout.join("")).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("cli - tdist --help lists every command of the registry", async () => {
    const { code, io } = await cli(["--help"]);
    expect(code).toBe(0);
    for (const command of COMMANDS) expect(io.stdout.join("\n")).toContain(command.name);
  });

  for (const command of COMMANDS) {
    it(`cli - ${command.name} --help exits 0 and shows each flag's default and TDIST_* variable`, async () => {
      const { code, io } = await cli([command.name, "--help"]);
      expect(code).toBe(0);
      const help = io.stdout.join("\n");
      expect(help).toContain(`Usage: tdist ${command.name}`);
      if (command.name !== "env" && command.name !== "make-model") {
        expect(help).toContain("--discovery <kind>");
        expect(help).toMatch(/default: "?memory"?, env: TDIST_DISCOVERY/);
      }
    });
  }

  it("cli - run --help names the port's default and variable", async () => {
    const { io } = await cli(["run", "--help"]);
    expect(io.stdout.join("\n")).toMatch(/--port <port>.*default: 8000, env: TDIST_HTTP_PORT/);
    expect(io.stdout.join("\n")).toMatch(/--host <address>.*default: 127\.0\.0\.1/);
  });

  it("cli - an unknown flag exits 2 and suggests the closest one", async () => {
    const { code, io } = await cli(["run", "--prot", "8000"]);
    expect(code).toBe(2);
    expect(io.stderr.join("\n")).toContain("unknown option '--prot'");
    expect(io.stderr.join("\n")).toContain("Did you mean --port?");
  });

  it("cli - an unknown command exits 2 and suggests the closest one", async () => {
    const { code, io } = await cli(["runn"]);
    expect(code).toBe(2);
    expect(io.stderr.join("\n")).toContain("Did you mean run?");
  });
});

describe("cli - every flag is checked before anything starts", () => {
  const refused: [string, string[], RegExp][] = [
    [
      "a router mode that does not exist",
      ["run", "--router-mode", "smart"],
      /--router-mode <mode>' argument 'smart' is invalid/,
    ],
    ["a port that is not a number", ["run", "--port", "abc"], /--port <port>' argument 'abc' is invalid/],
    ["a port out of range", ["frontend", "--port", "70000"], /--port <port>' argument '70000' is invalid/],
    ["zero workers", ["run", "--workers", "0"], /--workers <n>' argument '0' is invalid/],
    ["a fractional worker count", ["run", "--workers", "2.5"], /expected an integer/],
    ["a busy threshold above 1", ["run", "--active-decode-blocks-threshold", "1.5"], /expected a number >= 0 and <= 1/],
    ["an unknown engine", ["worker", "--engine", "vllm"], /--engine <engine>' argument 'vllm' is invalid/],
    ["an unknown discovery", ["run", "--discovery", "zookeeper"], /argument 'zookeeper' is invalid/],
  ];
  for (const [what, args, message] of refused) {
    it(`cli - ${what} exits 2 with the flag named`, async () => {
      const { code, io } = await cli(args);
      expect(code).toBe(2);
      expect(io.all).toMatch(message);
      expect(io.stdout.join("\n")).not.toContain("serving");
    });
  }

  const wrongEngine: [string, string[]][] = [
    ["--speedup", ["--engine", "llamacpp", "--speedup", "2"]],
    ["--delay-ms", ["--engine", "mocker", "--delay-ms", "5"]],
    ["--threads", ["--engine", "echo", "--threads", "2"]],
    ["--model", ["--engine", "mocker", "--model", "x.gguf"]],
    ["--no-kv-events", ["--engine", "mocker", "--no-kv-events"]],
  ];
  for (const [flag, args] of wrongEngine) {
    it(`cli - ${flag} with an engine that does not read it is refused with invalid_option`, async () => {
      const { code, io } = await cli(["run", ...args]);
      expect(code).toBe(2);
      expect(io.stderr.join("\n")).toMatch(new RegExp(`invalid_option: ${flag} applies to --engine`));
    });
  }

  it("cli - a TDIST_* variable with a bad value is refused like its flag", async () => {
    process.env.TDIST_HTTP_PORT = "eighty";
    try {
      const { code, io } = await cli(["run", "--engine", "echo"]);
      expect(code).toBe(2);
      expect(io.stderr.join("\n")).toContain("TDIST_HTTP_PORT");
    } finally {
      delete process.env.TDIST_HTTP_PORT;
    }
  });

  it("cli - run refuses --no-kv-events with --router-mode kv", async () => {
    const { code, io } = await cli(["run", "--engine", "llamacpp", "--no-kv-events", "--router-mode", "kv"]);
    expect(code).toBe(2);
    expect(io.stderr.join("\n")).toContain("invalid_option");
  });

  it("cli - frontend and worker on memory discovery are refused: they could never meet", async () => {
    for (const command of ["frontend", "worker"]) {
      const { code, io } = await cli([command, "--engine", "echo"].slice(0, command === "worker" ? 3 : 1));
      expect(code).toBe(2);
      expect(io.stderr.join("\n")).toMatch(/invalid_option: .*memory discovery is private to one process/);
    }
  });

  it("cli - a cluster frontend with --router-mode kv and no NATS is refused: it would route blind", async () => {
    const { code, io } = await cli(["frontend", "--discovery", "etcd", "--router-mode", "kv"]);
    expect(code).toBe(2);
    expect(io.stderr.join("\n")).toMatch(/invalid_option: --router-mode kv .* NATS/);
  });

  it("cli - status on memory discovery points at --url and etcd", async () => {
    const { code, io } = await cli(["status"]);
    expect(code).toBe(2);
    expect(io.stderr.join("\n")).toContain("--url");
  });
});
