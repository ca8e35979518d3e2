/**
 * The benchmark's server process: a raw framed TCP server (the baseline) and
 * a tdist runtime serving the same messages. Prints its addresses as JSON.
 */
import { type AddressInfo, createServer } from "node:net";
import { DistributedRuntime, type RuntimeOptions } from "@tdist/runtime";
import { BatchedWriter, frame, frameReader, message } from "./raw-protocol.js";

const raw = createServer({ noDelay: true }, (socket) => {
  const writer = new BatchedWriter(socket);
  let chain = Promise.resolve();
  socket.on("error", () => {});
  socket.on(
    "data",
    frameReader((streamId, payload) => {
      const { n } = JSON.parse(payload?.toString() ?? "{}") as { n: number };
      chain = chain.then(async () => {
        for (let i = 0; i < n; i++) await writer.write(frame(streamId, JSON.stringify(message(i))));
        await writer.write(frame(streamId, ""));
        await writer.flush();
      });
    }),
  );
});
await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));

const planes: Record<string, unknown> = {};
const runtimes: DistributedRuntime[] = [];
const natsUrl = process.argv[2];
const variants: [string, RuntimeOptions["requestPlane"]][] = [["tcp", { kind: "tcp", host: "127.0.0.1" }]];
if (natsUrl) variants.push(["nats", { kind: "nats", url: natsUrl }]);
for (const [name, requestPlane] of variants) {
  const runtime = await DistributedRuntime.create({ env: {}, ...(requestPlane ? { requestPlane } : {}) });
  runtimes.push(runtime);
  const served = await runtime
    .namespace("bench")
    .component(name)
    .endpoint("generate")
    .serve(async function* (request: { n: number }) {
      for (let i = 0; i < request.n; i++) yield message(i);
    });
  const [record] = await runtime.discovery.list("v1/instances/");
  planes[name] = { instanceId: served.instanceId, record: record?.value };
}

console.log(JSON.stringify({ rawPort: (raw.address() as AddressInfo).port, planes }));
process.stdin.resume();
process.stdin.on("end", async () => {
  for (const runtime of runtimes) await runtime.shutdown({ graceMs: 0 });
  process.exit(0);
});
