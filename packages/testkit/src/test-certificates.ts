import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { findExecutable } from "./find-executable.js";
import { TestkitError } from "./testkit-error.js";

/** A PEM certificate and its unencrypted private key, as file paths. */
export interface CertificateFiles {
  certFile: string;
  keyFile: string;
}

export interface TestCertificateOptions {
  /** Where the files go (created if missing); a test's temp dir. */
  dir: string;
  /** Names the server certificate carries (DNS names or IP addresses). Default: localhost, 127.0.0.1, ::1. */
  hosts?: readonly string[];
  /** Prefix of the CA's common name and file names, so two CAs in one dir do not collide. Default "test". */
  name?: string;
  /** Validity in days. Default 2. */
  days?: number;
}

/** A throwaway CA and a server and a client certificate it signed. */
export interface TestCertificates {
  /** The CA certificate (PEM): what both sides trust. */
  caFile: string;
  /** The CA's private key, for `issue`. */
  caKeyFile: string;
  /** Server certificate with `hosts` as subject alternative names (serverAuth and clientAuth). */
  server: CertificateFiles;
  /** Client certificate (clientAuth only, no names). */
  client: CertificateFiles;
  /** Signs one more certificate with this CA. */
  issue(name: string, options?: { hosts?: readonly string[]; usage?: "server" | "client" }): Promise<CertificateFiles>;
}

const DEFAULT_HOSTS = ["localhost", "127.0.0.1", "::1"];

/**
 * Makes a CA and certificates with the system `openssl` (EC P-256 keys, a
 * couple of seconds at most) for TLS tests: mutual TLS needs a server and a
 * client certificate from one CA, and "wrong certificate" tests need a
 * second CA (call this again with another `name`).
 *
 * ```ts
 * const certs = await makeTestCertificates({ dir: tmp, hosts: ["127.0.0.1"] });
 * const stranger = await makeTestCertificates({ dir: tmp, name: "stranger" });
 * ```
 */
export async function makeTestCertificates(options: TestCertificateOptions): Promise<TestCertificates> {
  const openssl = findExecutable("openssl");
  if (openssl === undefined) {
    throw new TestkitError("server_not_installed", "openssl is not on PATH (Debian package: openssl)");
  }
  const { dir } = options;
  const name = options.name ?? "test";
  const days = String(options.days ?? 2);
  await mkdir(dir, { recursive: true });
  const caFile = join(dir, `${name}-ca.crt`);
  const caKeyFile = join(dir, `${name}-ca.key`);
  await run(openssl, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    caKeyFile,
    "-out",
    caFile,
    "-subj",
    `/CN=${name} tdist test CA`,
    "-days",
    days,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);

  const issue: TestCertificates["issue"] = async (leaf, issueOptions = {}) => {
    const base = join(dir, `${name}-${leaf}`);
    const files = { certFile: `${base}.crt`, keyFile: `${base}.key` };
    const extensions = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"];
    const usage = issueOptions.usage ?? "server";
    extensions.push(usage === "server" ? "extendedKeyUsage=serverAuth,clientAuth" : "extendedKeyUsage=clientAuth");
    const hosts = issueOptions.hosts ?? (usage === "server" ? DEFAULT_HOSTS : []);
    if (hosts.length > 0) {
      extensions.push(`subjectAltName=${hosts.map((host) => `${isIP(host) ? "IP" : "DNS"}:${host}`).join(",")}`);
    }
    const extensionFile = `${base}.ext`;
    await writeFile(extensionFile, `${extensions.join("\n")}\n`);
    await run(openssl, [
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      files.keyFile,
      "-out",
      `${base}.csr`,
      "-subj",
      `/CN=${leaf}`,
    ]);
    await run(openssl, [
      "x509",
      "-req",
      "-in",
      `${base}.csr`,
      "-CA",
      caFile,
      "-CAkey",
      caKeyFile,
      "-set_serial",
      `0x${randomBytes(8).toString("hex")}`,
      "-days",
      days,
      "-extfile",
      extensionFile,
      "-out",
      files.certFile,
    ]);
    return files;
  };

  const server = await issue("server", { hosts: options.hosts ?? DEFAULT_HOSTS, usage: "server" });
  const client = await issue("client", { usage: "client" });
  return { caFile, caKeyFile, server, client, issue };
}

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 20_000 }, (err, _stdout, stderr) => {
      if (err) {
        reject(new TestkitError("certificate_failed", `openssl ${args[0]} failed: ${stderr.trim()}`, { cause: err }));
      } else {
        resolve();
      }
    });
  });
}
