import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestCertificates, type TestCertificates } from "@tdist/testkit";
import { afterAll, beforeAll } from "vitest";
import type { TcpTlsOptions } from "../request-plane/tcp-tls.js";

/** A test file's throwaway TLS material: the cluster's CA and certificates, and a stranger's from another CA. */
export interface TestTls {
  readonly dir: string;
  readonly certs: TestCertificates;
  readonly stranger: TestCertificates;
  /** The cluster's mutual-TLS settings (server certificate, key and CA). */
  clusterTls(): TcpTlsOptions;
}

/** Makes the certificates before the file's tests (openssl, in a temp dir) and removes them after. */
export function useTestTls(prefix: string): TestTls {
  let dir: string | undefined;
  let certs: TestCertificates | undefined;
  let stranger: TestCertificates | undefined;
  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("test TLS material is made in beforeAll");
    return value;
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
    certs = await makeTestCertificates({ dir, hosts: ["127.0.0.1"] });
    stranger = await makeTestCertificates({ dir, name: "stranger", hosts: ["127.0.0.1"] });
  }, 30_000);
  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return ready(dir);
    },
    get certs() {
      return ready(certs);
    },
    get stranger() {
      return ready(stranger);
    },
    clusterTls() {
      const server = ready(certs);
      return { certFile: server.server.certFile, keyFile: server.server.keyFile, caFile: server.caFile };
    },
  };
}
