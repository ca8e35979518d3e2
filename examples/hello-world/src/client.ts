#!/usr/bin/env node
/**
 * The hello-world client as its own process: sends `--requests N` requests
 * (default 1) round-robin and prints each streamed word with its instance.
 *
 *   node dist/client.js "hello distributed world" --requests 6
 */
import { parseArgs } from "node:util";
import { DistributedRuntime } from "@tdist/runtime";
import { helloClient } from "./hello-world.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    requests: { type: "string", default: "1" },
    "timeout-ms": { type: "string", default: "10000" },
    json: { type: "boolean", default: false },
  },
});
const text = positionals.join(" ") || "hello world";
const runtime = await DistributedRuntime.create();
try {
  const client = await helloClient(runtime);
  await client.waitForInstances({ timeoutMs: Number(values["timeout-ms"]) });
  for (let i = 0; i < Number(values.requests); i++) {
    const words: string[] = [];
    let instanceId = "";
    for await (const chunk of client.generate({ text })) {
      words.push(chunk.word);
      instanceId = chunk.instanceId;
      if (!values.json) console.log(`${chunk.instanceId}: ${chunk.word}`);
    }
    if (values.json) console.log(JSON.stringify({ request: i, instanceId, words }));
  }
} finally {
  await runtime.shutdown();
}
