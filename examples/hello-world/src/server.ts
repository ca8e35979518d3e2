#!/usr/bin/env node
/**
 * The hello-world server as its own process. Configuration comes from the
 * TDIST_* environment (e.g. TDIST_DISCOVERY=etcd TDIST_ETCD_ENDPOINTS=...).
 */
import { DistributedRuntime, shutdownOnSignals } from "@tdist/runtime";
import { serveHelloWorld } from "./hello-world.js";

const runtime = await DistributedRuntime.create();
shutdownOnSignals(runtime);
const served = await serveHelloWorld(runtime);
console.log(JSON.stringify({ event: "serving", instanceId: served.instanceId, path: served.path }));
