// An echo model worker in a process of its own (TCP request plane, etcd discovery), for tests that kill it.
// Arguments: etcd endpoint, namespace, model name, delay per token in ms. Its lease outlives the tests.
import { serveEchoWorker } from "@tdist/engine-echo";
import { DistributedRuntime } from "@tdist/runtime";

const [etcd, namespace, modelName, delayMsPerToken] = process.argv.slice(2);
const runtime = await DistributedRuntime.create({
  env: {},
  discovery: { kind: "etcd", endpoints: [etcd] },
  requestPlane: { kind: "tcp", host: "127.0.0.1" },
  leaseTtlMs: 120_000,
});
const served = await serveEchoWorker(runtime, { namespace, modelName, delayMsPerToken: Number(delayMsPerToken) });
console.log(`echo worker ready ${served.instanceId}`);
