import { startInProcessCluster } from "@tdist/testkit";
import { describe, expect, it } from "vitest";
import { helloClient, serveHelloWorld } from "./hello-world.js";

describe("hello world", () => {
  it("hello - streams the words back with the first capitalised", async () => {
    await using cluster = await startInProcessCluster(2);
    const [server, caller] = cluster.runtimes as [never, never];
    await serveHelloWorld(server);
    const client = await helloClient(caller);
    await client.waitForInstances({ timeoutMs: 2_000 });
    const words: string[] = [];
    for await (const chunk of client.generate({ text: "hello world" })) words.push(chunk.word);
    expect(words).toEqual(["Hello", "world"]);
  });
});
