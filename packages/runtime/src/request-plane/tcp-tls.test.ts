import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { connect as connectTls } from "node:tls";
import { inspect } from "node:util";
import { type InProcessCluster, startInProcessCluster } from "@tdist/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import type { Logger } from "../logger.js";
import type { RuntimeOptions } from "../runtime-options.js";
import { resolveRuntimeOptions } from "../runtime-options.js";
import { collect, describeRequestPlaneSuite, expectError, wordsHandler } from "../testing/request-plane-suite.js";
import { useTestTls } from "../testing/test-tls.js";
import { withTimeout } from "../util/abort.js";
import { FrameParser, FrameType } from "./frame.js";

const tls = useTestTls("tdist-tcp-tls-");

// The whole request-plane contract (streams, cancellation, credit, drains) again, over mutual TLS.
describeRequestPlaneSuite("tcp+tls", () => ({
  requestPlane: { kind: "tcp", host: "127.0.0.1" },
  tcpTls: tls.clusterTls(),
}));

/** A logger that keeps every line, so tests can look for secrets in them. */
function recordingLogger(lines: string[]): Logger {
  const record =
    (level: string) =>
    (obj: object, msg?: string): void => {
      lines.push(`${level} ${msg ?? ""} ${inspect(obj, { depth: 6 })}`);
    };
  const logger: Logger = {
    debug: record("debug"),
    info: record("info"),
    warn: record("warn"),
    error: record("error"),
    child: () => logger,
  };
  return logger;
}

describe("tcp request plane - TLS", () => {
  let cluster: InProcessCluster | undefined;
  const lines: string[] = [];

  afterEach(async () => {
    await cluster?.shutdown();
    cluster = undefined;
  });

  /** A TLS cluster with one words server; returns its address and a way to add callers. */
  async function serveOverTls(): Promise<{ address: string; cluster: InProcessCluster }> {
    cluster = await startInProcessCluster(1, {
      requestPlane: { kind: "tcp", host: "127.0.0.1" },
      tcpTls: tls.clusterTls(),
      logger: recordingLogger(lines),
    });
    const endpoint = cluster.runtimes[0]?.namespace("test").component("words").endpoint("generate");
    await endpoint?.serve(wordsHandler);
    const client = await endpoint?.client();
    const [instance] = (await client?.waitForInstances({ timeoutMs: 2_000 })) ?? [];
    if (!instance || !("tcp" in instance.transport)) throw new Error("no tcp instance");
    return { address: instance.transport.tcp, cluster };
  }

  async function callerWith(c: InProcessCluster, options: RuntimeOptions) {
    const caller = await c.add({ logger: recordingLogger(lines), ...options });
    const client = await caller.namespace("test").component("words").endpoint("generate").client();
    await client.waitForInstances({ timeoutMs: 2_000 });
    return client;
  }

  async function expectStillServing(c: InProcessCluster): Promise<void> {
    const good = await callerWith(c, { tcpTls: tls.clusterTls() });
    expect(await collect(good.generate({ text: "still serving" }))).toEqual(["still", "serving"]);
  }

  it("tcp tls - a caller whose certificate another CA signed is refused with cannot_connect", async () => {
    const { cluster: c } = await serveOverTls();
    const intruder = await callerWith(c, {
      tcpTls: {
        certFile: tls.stranger.client.certFile,
        keyFile: tls.stranger.client.keyFile,
        caFile: tls.certs.caFile,
      },
    });
    const error = await expectError(collect(intruder.generate({ text: "let me in" })), "cannot_connect");
    expect(error.message).toMatch(/certificate/);
    await expectStillServing(c);
  });

  it("tcp tls - a caller with no certificate gets a cannot_connect ERROR frame and nothing it sent is served", async () => {
    const { address, cluster: c } = await serveOverTls();
    const [host, port] = address.split(":") as [string, string];
    const socket = connectTls({ host, port: Number(port), ca: await readFile(tls.certs.caFile) });
    socket.on("error", () => {});
    const errors: { stream: number; code: string }[] = [];
    const parser = new FrameParser(1 << 20, (frame) => {
      if (frame.type === FrameType.ERROR) {
        errors.push({ stream: frame.streamId, code: JSON.parse(frame.payload.toString()).code });
      }
    });
    socket.on("data", (chunk: Buffer) => parser.push(chunk));
    await withTimeout("refusal", 3_000, undefined, async () => {
      await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    });
    expect(errors).toEqual([{ stream: 0, code: "cannot_connect" }]);
    await expectStillServing(c);
  });

  it("tcp tls - a plaintext caller is refused with cannot_connect naming the TLS variables", async () => {
    const { cluster: c } = await serveOverTls();
    const plaintext = await callerWith(c, { tcpTls: false });
    const error = await expectError(collect(plaintext.generate({ text: "hello?" })), "cannot_connect");
    expect(error.message).toContain("TDIST_TCP_TLS_CA");
    await expectStillServing(c);
  });

  it("tcp tls - a caller that does not trust the server's CA refuses it with cannot_connect", async () => {
    const { cluster: c } = await serveOverTls();
    const wary = await callerWith(c, {
      tcpTls: { certFile: tls.certs.client.certFile, keyFile: tls.certs.client.keyFile, caFile: tls.stranger.caFile },
    });
    await expectError(collect(wary.generate({ text: "x" })), "cannot_connect");
    await expectStillServing(c);
  });

  it("tcp tls - a server certificate that does not name the advertised host is refused", async () => {
    const elsewhere = await tls.certs.issue("elsewhere", { hosts: ["elsewhere.invalid"] });
    cluster = await startInProcessCluster(1, {
      requestPlane: { kind: "tcp", host: "127.0.0.1" },
      tcpTls: { ...elsewhere, caFile: tls.certs.caFile },
    });
    await cluster.runtimes[0]?.namespace("test").component("words").endpoint("generate").serve(wordsHandler);
    const caller = await callerWith(cluster, { tcpTls: tls.clusterTls() });
    const error = await expectError(collect(caller.generate({ text: "x" })), "cannot_connect");
    expect(error.message).toContain("ERR_TLS_CERT_ALTNAME_INVALID");
  });

  it("tcp tls - a TLS caller of a plaintext server fails with cannot_connect", async () => {
    cluster = await startInProcessCluster(1, { requestPlane: { kind: "tcp", host: "127.0.0.1" } });
    await cluster.runtimes[0]?.namespace("test").component("words").endpoint("generate").serve(wordsHandler);
    const caller = await callerWith(cluster, { tcpTls: tls.clusterTls() });
    await expectError(collect(caller.generate({ text: "x" })), "cannot_connect");
  });

  it("tcp tls - no key material appears in logs, errors or the resolved options", async () => {
    const keys = await Promise.all(
      [tls.certs.server.keyFile, tls.certs.client.keyFile, tls.stranger.client.keyFile].map((file) =>
        readFile(file, "utf8"),
      ),
    );
    // The base64 body of each key, line by line: any fragment of it leaking is a failure.
    const fragments = keys.flatMap((pem) =>
      pem.split("\n").filter((line) => line.length > 16 && !line.startsWith("-")),
    );
    const messages: string[] = [];
    const { cluster: c } = await serveOverTls();
    const intruder = await callerWith(c, {
      tcpTls: {
        certFile: tls.stranger.client.certFile,
        keyFile: tls.stranger.client.keyFile,
        caFile: tls.certs.caFile,
      },
    });
    try {
      await collect(intruder.generate({ text: "x" }));
    } catch (err) {
      messages.push(inspect(err, { depth: 6 }));
    }
    // A certificate given as the key: the load error names the file and OpenSSL's reason only.
    try {
      resolveRuntimeOptions({ env: {}, tcpTls: { ...tls.clusterTls(), keyFile: tls.certs.client.keyFile } });
    } catch (err) {
      expect(TdistError.is(err, "invalid_option")).toBe(true);
      messages.push(inspect(err, { depth: 6 }));
    }
    const resolved = resolveRuntimeOptions({ env: {}, tcpTls: tls.clusterTls() });
    messages.push(inspect(resolved, { depth: 6 }), JSON.stringify(resolved.tcpTls));
    expect(messages.length).toBe(4);
    expect(lines.length).toBeGreaterThan(0);
    for (const text of [...lines, ...messages]) {
      expect(text).not.toContain("PRIVATE KEY");
      for (const fragment of fragments) expect(text).not.toContain(fragment);
    }
  });
});

describe("tcp tls options", () => {
  it("tcp tls options - TDIST_TCP_TLS_* set together load; partly set or unreadable is invalid_option", () => {
    const env = { TDIST_TCP_TLS_CERT: tls.certs.server.certFile, TDIST_TCP_TLS_KEY: tls.certs.server.keyFile };
    expect(resolveRuntimeOptions({ env: {} }).tcpTls).toBeUndefined();
    expect(resolveRuntimeOptions({ env: { ...env, TDIST_TCP_TLS_CA: tls.certs.caFile } }).tcpTls?.toJSON()).toEqual(
      tls.clusterTls(),
    );
    expect(resolveRuntimeOptions({ env: { ...env, TDIST_TCP_TLS_CA: tls.certs.caFile }, tcpTls: false }).tcpTls).toBe(
      undefined,
    );
    const partly = captureError(() => resolveRuntimeOptions({ env }));
    expect(partly.code).toBe("invalid_option");
    expect(partly.message).toContain("TDIST_TCP_TLS_CA");
    const missing = captureError(() =>
      resolveRuntimeOptions({ env: { ...env, TDIST_TCP_TLS_CA: join(tls.dir, "no-such-ca.crt") } }),
    );
    expect(missing.code).toBe("invalid_option");
    expect(missing.message).toContain("no-such-ca.crt");
    const mismatched = captureError(() =>
      resolveRuntimeOptions({ env: {}, tcpTls: { ...tls.clusterTls(), keyFile: tls.certs.client.keyFile } }),
    );
    expect(mismatched.code).toBe("invalid_option");
  });
});

function captureError(run: () => unknown): TdistError {
  try {
    run();
  } catch (err) {
    if (err instanceof TdistError) return err;
    throw err;
  }
  throw new Error("expected an error");
}
