/**
 * bench/runtime: what the request plane costs over raw framed TCP.
 *
 *   npm run bench -- runtime [--quick] [--nats]
 *
 * Unary round trip p50/p99 and streaming messages/s (one stream; 64 concurrent
 * streams) for the TCP request plane (and the NATS plane with --nats) against
 * a raw framed TCP ping-pong/stream in a separate server process.
 */
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type Client, DistributedRuntime, instanceKey } from "@tdist/runtime";
import { type BenchResult, result, writeReport } from "../lib/results.js";
import { percentile } from "../lib/stats.js";
import { type BenchMessage, frame, frameReader } from "./raw-protocol.js";

const { values } = parseArgs({ options: { quick: { type: "boolean", default: false }, nats: { type: "boolean" } } });
const quick = values.quick === true;
const config = {
  unaryRequests: quick ? 3_000 : 20_000,
  streamMessages: quick ? 100_000 : 500_000,
  concurrentStreams: 64,
  rounds: quick ? 2 : 3,
  streamWindow: 1024,
};

let natsServer: { url: string; stop(): Promise<void> } | undefined;
if (values.nats) {
  const { startNats } = await import("@tdist/testkit");
  natsServer = await startNats();
}

const here = dirname(fileURLToPath(import.meta.url));
const child = spawn(process.execPath, [join(here, "server.js"), ...(natsServer ? [natsServer.url] : [])], {
  stdio: ["pipe", "pipe", "inherit"],
});
const ready = await new Promise<{ rawPort: number; planes: Record<string, { instanceId: string; record: string }> }>(
  (resolve, reject) => {
    child.stdout.once("data", (chunk: Buffer) => resolve(JSON.parse(chunk.toString())));
    child.once("exit", (code) => reject(new Error(`bench server exited with ${code}`)));
  },
);

// ---- raw baseline -------------------------------------------------------------
const socket = connect({ host: "127.0.0.1", port: ready.rawPort, noDelay: true });
await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
const rawStreams = new Map<number, { onMessage: (m: BenchMessage) => void; onEnd: () => void }>();
socket.on(
  "data",
  frameReader((streamId, payload) => {
    const handlers = rawStreams.get(streamId);
    if (!handlers) return;
    if (payload === undefined) {
      rawStreams.delete(streamId);
      handlers.onEnd();
    } else {
      handlers.onMessage(JSON.parse(payload.toString()) as BenchMessage);
    }
  }),
);
let nextRawStream = 1;
function rawRequest(n: number, onMessage: (m: BenchMessage) => void): Promise<void> {
  const streamId = nextRawStream++;
  return new Promise((resolve) => {
    rawStreams.set(streamId, { onMessage, onEnd: resolve });
    socket.write(frame(streamId, JSON.stringify({ n })));
  });
}

async function timeUnary(call: () => Promise<void>, count: number): Promise<number[]> {
  for (let i = 0; i < Math.min(1_000, count); i++) await call();
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await call();
    samples.push((performance.now() - start) * 1000);
  }
  return samples;
}

async function timeStreams(open: (n: number) => Promise<number>, total: number, streams: number): Promise<number> {
  await open(Math.min(10_000, total));
  const perStream = Math.floor(total / streams);
  const start = performance.now();
  const counts = await Promise.all(Array.from({ length: streams }, () => open(perStream)));
  const seconds = (performance.now() - start) / 1000;
  return counts.reduce((a, b) => a + b, 0) / seconds;
}

const rawUnary = () => rawRequest(1, () => {});
const rawOpen = async (n: number) => {
  let count = 0;
  await rawRequest(n, () => count++);
  return count;
};

// ---- tdist planes -------------------------------------------------------------
const callers: DistributedRuntime[] = [];
async function clientFor(plane: string): Promise<Client<{ n: number }, BenchMessage>> {
  const info = ready.planes[plane];
  if (!info) throw new Error(`server has no ${plane} plane`);
  // The caller speaks the plane the instance advertises; discovery here is a static registration
  // of the server process's record, since memory discovery does not cross processes.
  const caller = await DistributedRuntime.create({
    env: {},
    streamWindow: config.streamWindow,
    requestPlane:
      plane === "nats" && natsServer ? { kind: "nats", url: natsServer.url } : { kind: "tcp", host: "127.0.0.1" },
  });
  callers.push(caller);
  await caller.discovery.put(instanceKey("bench", plane, "generate", info.instanceId), info.record);
  const client = await caller
    .namespace("bench")
    .component(plane)
    .endpoint("generate")
    .client<{ n: number }, BenchMessage>();
  await client.waitForInstances({ timeoutMs: 5_000 });
  return client;
}

const results: BenchResult[] = [];
const best = (xs: number[]) => Math.max(...xs);
const lowest = (xs: number[]) => Math.min(...xs);

const rawRtt: number[][] = [];
const rawStream1: number[] = [];
const rawStream64: number[] = [];
for (let round = 0; round < config.rounds; round++) {
  rawRtt.push(await timeUnary(rawUnary, config.unaryRequests));
  rawStream1.push(await timeStreams(rawOpen, config.streamMessages, 1));
  rawStream64.push(await timeStreams(rawOpen, config.streamMessages, config.concurrentStreams));
}
const rawP50 = lowest(rawRtt.map((s) => percentile(s, 0.5)));
const rawP99 = lowest(rawRtt.map((s) => percentile(s, 0.99)));

const planeNames = natsServer ? ["tcp", "nats"] : ["tcp"];
for (const plane of planeNames) {
  const client = await clientFor(plane);
  const unary = async () => {
    for await (const _ of client.generate({ n: 1 }));
  };
  const open = async (n: number) => {
    let count = 0;
    for await (const _ of client.generate({ n })) count++;
    return count;
  };
  const rtt: number[][] = [];
  const s1: number[] = [];
  const s64: number[] = [];
  for (let round = 0; round < config.rounds; round++) {
    rtt.push(await timeUnary(unary, config.unaryRequests));
    s1.push(await timeStreams(open, config.streamMessages, 1));
    s64.push(await timeStreams(open, config.streamMessages, config.concurrentStreams));
  }
  const p50 = lowest(rtt.map((s) => percentile(s, 0.5)));
  const p99 = lowest(rtt.map((s) => percentile(s, 0.99)));
  // The goals are the TCP plane's; the NATS plane adds a broker hop and is recorded for comparison.
  const goal = (tcpGoal: string) => (plane === "tcp" ? tcpGoal : "recorded (via nats-server)");
  results.push(
    result("unary_rtt_p50_us", plane, p50, "us", "raw-tcp", rawP50, goal("<= 1.5 (lower is better)")),
    result("unary_rtt_p99_us", plane, p99, "us", "raw-tcp", rawP99, goal("lower is better")),
    result(
      "stream_msgs_per_s",
      `${plane}-1stream`,
      best(s1),
      "msg/s",
      "raw-tcp",
      best(rawStream1),
      goal(">= 0.6 and >= 300k msg/s"),
    ),
    result("stream_msgs_per_s", `${plane}-64streams`, best(s64), "msg/s", "raw-tcp", best(rawStream64), goal(">= 0.6")),
  );
}

writeReport("runtime", config, results, { quick });
for (const caller of callers) await caller.shutdown({ graceMs: 0 });
socket.destroy();
child.stdin.end();
await new Promise((resolve) => child.once("exit", resolve));
await natsServer?.stop();
