import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { delay, withTimeout } from "@tdist/runtime";
import { makeTestCertificates, type TestCertificates } from "@tdist/testkit";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../cli.js";
import { CaptureIo } from "../testing/capture-io.js";
import { recordingLogger } from "../testing/recording-logger.js";
import { fetchTrusting } from "../testing/trusting-fetch.js";

/** Stands in for Ctrl-C, so the test runner itself is not signalled. */
const STOP = "SIGUSR2" as const;
const BOUND_MS = 20_000;
const FILE_KEYS = ["sk-file-key-one-31415926", "sk-file-key-two-27182818"];
const FLAG_KEY = "sk-flag-key-16180339";

describe("frontend security flags", () => {
  let dir: string;
  let certs: TestCertificates;
  let keyFile: string;
  /** Every log line and everything the commands wrote: the secret scan reads it. */
  const seen: string[] = [];
  const ios: CaptureIo[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tdist-security-flags-"));
    certs = await makeTestCertificates({ dir, hosts: ["127.0.0.1"] });
    keyFile = join(dir, "api-keys");
    // A Kubernetes secret's file, or a hand-kept list with comments.
    await writeFile(keyFile, `# frontend keys\n${FILE_KEYS[0]}\n\n  ${FILE_KEYS[1]}  \n`);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cli = (args: string[]): { io: CaptureIo; done: Promise<number> } => {
    const io = new CaptureIo();
    ios.push(io);
    const done = runCli(args, io, {
      logger: recordingLogger(seen),
      serve: { signals: [STOP], forceExit: () => {} },
    });
    return { io, done };
  };

  const served = async (io: CaptureIo): Promise<string> =>
    withTimeout("banner", BOUND_MS, undefined, async () => {
      for (;;) {
        const url = /API at (https?:\/\/[^\s]+)\/v1/.exec(io.stdout.join("\n"))?.[1];
        if (url && io.stdout.some((line) => line.includes("listening:"))) return url;
        await delay(20);
      }
    });

  const stop = async (done: Promise<number>): Promise<void> => {
    process.emit(STOP, STOP);
    expect(await withTimeout("stopped", BOUND_MS, undefined, () => done)).toBe(0);
  };

  it("frontend security flags - run --api-key-file --tls-cert --tls-key serves HTTPS to a key of the file only", async () => {
    const { io, done } = cli([
      "run",
      "--engine",
      "echo",
      "--port",
      "0",
      "--api-key-file",
      keyFile,
      "--tls-cert",
      certs.server.certFile,
      "--tls-key",
      certs.server.keyFile,
      "--max-concurrent-requests",
      "4",
      "--log-level",
      "debug",
    ]);
    const url = await served(io);
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(io.stdout.join("\n")).toContain("api key:   required");
    const trusting = fetchTrusting(await readFile(certs.caFile, "utf8"));
    const openai = (apiKey: string) =>
      new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: BOUND_MS, fetch: trusting });
    const completion = await openai(FILE_KEYS[1] as string).completions.create({
      model: "echo",
      prompt: "hi there",
      max_tokens: 2,
    });
    expect(completion.usage?.completion_tokens).toBe(2);
    let refused: unknown;
    try {
      await openai("# frontend keys").models.list();
    } catch (err) {
      refused = err;
      seen.push(String(err));
    }
    expect(refused).toBeInstanceOf(OpenAI.AuthenticationError);
    await stop(done);
  }, 40_000);

  it("frontend security flags - status --url needs --api-key when the frontend has keys", async () => {
    const { io, done } = cli(["run", "--engine", "echo", "--port", "0", "--api-key", `${FLAG_KEY},sk-other-1`]);
    const url = await served(io);
    const without = cli(["status", "--url", url]);
    expect(await withTimeout("status", BOUND_MS, undefined, () => without.done)).toBe(1);
    expect(without.io.stderr.join("\n")).toMatch(/^tdist: unauthorized: .*--api-key/);
    const wrong = cli(["status", "--url", url, "--api-key", "sk-wrong-key-5555"]);
    expect(await withTimeout("status", BOUND_MS, undefined, () => wrong.done)).toBe(1);
    expect(wrong.io.stderr.join("\n")).toMatch(/^tdist: unauthorized: /);
    const right = cli(["status", "--url", url, "--api-key", FLAG_KEY, "--json"]);
    expect(await withTimeout("status", BOUND_MS, undefined, () => right.done)).toBe(0);
    expect(right.io.stdout.join("\n")).toContain('"echo"');
    await stop(done);
  }, 40_000);

  it("frontend security flags - conflicting or incomplete settings are refused before anything starts", async () => {
    const refused = async (args: string[]): Promise<string> => {
      const { io, done } = cli(["run", "--engine", "echo", "--port", "0", ...args]);
      expect(await withTimeout("refused", BOUND_MS, undefined, () => done)).toBe(2);
      return io.stderr.join("\n");
    };
    expect(await refused(["--api-key", FLAG_KEY, "--api-key-file", keyFile])).toMatch(/^tdist: invalid_option: /);
    expect(await refused(["--tls-cert", certs.server.certFile])).toMatch(/^tdist: invalid_option: .*--tls-key/);
    expect(await refused(["--metrics-access", "api-key"])).toMatch(/^tdist: invalid_option: .*--api-key/);
    expect(await refused(["--api-key-file", join(dir, "missing")])).toMatch(/^tdist: invalid_option: .*ENOENT/);
    expect(await refused(["--api-key", `${FLAG_KEY},`])).toMatch(/^tdist: invalid_option: .*empty key/);
    expect(await refused(["--api-key", `${FLAG_KEY} spaced`])).toMatch(/^tdist: invalid_option: /);
    // A key file that is a certificate key, or a certificate that is not one.
    expect(await refused(["--tls-cert", keyFile, "--tls-key", certs.server.keyFile])).toMatch(
      /^tdist: invalid_option: tls: /,
    );
  }, 60_000);

  it("frontend security flags - every flag is in --help with its variable", async () => {
    const { io, done } = cli(["frontend", "--help"]);
    await withTimeout("help", BOUND_MS, undefined, () => done);
    const help = io.all.replace(/\s+/g, " ");
    for (const [flag, variable] of [
      ["--api-key <keys>", "TDIST_API_KEY"],
      ["--api-key-file <file>", "TDIST_API_KEY_FILE"],
      ["--metrics-access <access>", "TDIST_METRICS_ACCESS"],
      ["--tls-cert <file>", "TDIST_HTTP_TLS_CERT"],
      ["--tls-key <file>", "TDIST_HTTP_TLS_KEY"],
      ["--max-concurrent-requests <n>", "TDIST_HTTP_MAX_CONCURRENT_REQUESTS"],
    ] as const) {
      expect(help).toContain(flag);
      expect(help).toContain(`env: ${variable}`);
    }
  });

  it("frontend security flags - no API key appears in any log line or output of these runs", () => {
    const text = [...seen, ...ios.map((io) => io.all)].join("\n");
    expect(seen.length).toBeGreaterThan(0);
    for (const secret of [...FILE_KEYS, FLAG_KEY, "sk-wrong-key-5555", "sk-other-1"]) {
      expect(text.includes(secret), `a log line or output holds ${secret.slice(0, 8)}…`).toBe(false);
    }
  });
});
