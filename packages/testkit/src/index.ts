/**
 * @tdist/testkit: real etcd and nats-server processes on free loopback ports
 * for integration tests, plus in-process cluster helpers.
 *
 * ```ts
 * await using etcd = await startEtcd();
 * await using nats = await startNats();
 * // etcd.endpoint: "http://127.0.0.1:<port>", nats.url: "nats://127.0.0.1:<port>"
 * await etcd.restart(); // same port and data directory
 * ```
 */
export { childPids, processAlive } from "./child-pids.js";
export * from "./etcd-server.js";
export { findExecutable } from "./find-executable.js";
export { freePort } from "./free-port.js";
export { type InProcessCluster, startInProcessCluster } from "./in-process-cluster.js";
export { ManagedProcess, type ManagedProcessOptions, type ProcessExit } from "./managed-process.js";
export { makeNatsJwtSetup, type NatsJwtSetup } from "./nats-credentials.js";
export * from "./nats-server.js";
export { NodeProcess, type NodeProcessOptions, repoRoot } from "./node-process.js";
export type { ServerHandle } from "./server-process.js";
export {
  type CertificateFiles,
  makeTestCertificates,
  type TestCertificateOptions,
  type TestCertificates,
} from "./test-certificates.js";
export { TestkitError, type TestkitErrorCode } from "./testkit-error.js";
export { type WarnLine, warnRecorder } from "./warn-recorder.js";
