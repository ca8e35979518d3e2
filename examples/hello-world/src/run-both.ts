#!/usr/bin/env node
/** Server and client in one process (embedded mode): `npm run example:hello`. */
import { DistributedRuntime } from "@tdist/runtime";
import { helloClient, serveHelloWorld } from "./hello-world.js";

const text = process.argv.slice(2).join(" ") || "hello world from tdist";
const server = await DistributedRuntime.create();
const caller = await DistributedRuntime.create();
try {
  await serveHelloWorld(server);
  const client = await helloClient(caller);
  await client.waitForInstances({ timeoutMs: 5_000 });
  console.log(`> ${text}`);
  for await (const chunk of client.generate({ text, delayMs: 50 })) console.log(chunk.word);
} finally {
  await caller.shutdown();
  await server.shutdown();
}
