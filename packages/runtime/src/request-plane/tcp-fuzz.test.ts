import { connect, type Socket } from "node:net";
import { type InProcessCluster, startInProcessCluster } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Handler } from "../handler.js";
import { FuzzInput, wireErrorProblem } from "../testing/request-plane-fuzz.js";
import { collect, wordsHandler } from "../testing/request-plane-suite.js";
import { delay, withTimeout } from "../util/abort.js";
import { mulberry32 } from "../util/seeded-random.js";
import { encodeCredit, encodeFrame, encodeRequestPayload, FrameParser, FrameType } from "./frame.js";

const SEED = 0x7d15;
const CASES = 3_000;
const MAX_FRAME_BYTES = 64 * 1024;
const WORDS = "test/words/generate";
/** The probe's stream id: a well-formed request sent after each case's bytes. */
const PROBE = 0x7fff_fff0;

/**
 * What a case expects of the server:
 * - `stream`: the framing is intact, so the connection stays open and each
 *   stream in `answers` ends (END or a typed ERROR) before the probe's END;
 * - `fatal`: a framing error: ERROR on stream 0 with a typed code, then close;
 * - `any`: random or mutated bytes, then a half-close: whatever arrives must
 *   parse and every ERROR must be typed.
 */
type Expectation = { kind: "stream"; answers: number[] } | { kind: "fatal" } | { kind: "any" };

interface FuzzCase {
  bytes: Buffer;
  expect: Expectation;
}

function request(streamId: number, text: string, credit = 8): Buffer {
  return encodeFrame(
    FrameType.REQUEST,
    streamId,
    encodeRequestPayload(WORDS, { requestId: `r${streamId}`, credit }, Buffer.from(JSON.stringify({ text }))),
  );
}

function frame(type: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(9 + payload.length);
  out.writeUInt32BE(5 + payload.length, 0);
  out[4] = type;
  out.writeUInt32BE(streamId, 5);
  payload.copy(out, 9);
  return out;
}

function makeCase(input: FuzzInput): FuzzCase {
  const id = 1 + input.int(1000);
  switch (input.int(12)) {
    case 0:
    case 1:
    case 2: {
      // Well-framed REQUESTs whose payload is anything: each gets its own answer.
      const count = 1 + input.int(3);
      const ids = Array.from({ length: count }, (_, i) => id + i);
      const frames = ids.map((streamId) => encodeFrame(FrameType.REQUEST, streamId, input.requestPayload(WORDS)));
      return { bytes: Buffer.concat(frames), expect: { kind: "stream", answers: ids } };
    }
    case 3: {
      // Control frames for streams that do not exist are ignored.
      const type = input.pick([FrameType.CREDIT, FrameType.STOP, FrameType.KILL]);
      const payload = type === FrameType.CREDIT ? encodeCredit(id, input.int(2 ** 32)).subarray(9) : undefined;
      return { bytes: frame(type, id + 5000, payload), expect: { kind: "stream", answers: [] } };
    }
    case 4: {
      // A stream paused for credit, then credit far past any window: it finishes.
      const grants = Array.from({ length: 1 + input.int(3) }, () => encodeCredit(id, 0xffff_ffff));
      return {
        bytes: Buffer.concat([request(id, "a b c d e f", 1), ...grants]),
        expect: { kind: "stream", answers: [id] },
      };
    }
    case 5: {
      // Framing errors the server must close the connection for.
      const fatal = [
        () => frame(input.pick([0, 8, 9, 42, 255]), id, input.bytes(8)),
        () => frame(input.pick([FrameType.DATA, FrameType.END, FrameType.ERROR]), id, input.bytes(8)),
        () => frame(FrameType.CREDIT, id, input.pick([Buffer.alloc(0), Buffer.alloc(3), Buffer.alloc(5)])),
        () => Buffer.from([0, 0, 0, input.int(5), 1, 0, 0, 0, 1]),
        () => {
          const header = Buffer.alloc(9);
          header.writeUInt32BE(MAX_FRAME_BYTES + input.int(2 ** 31), 0);
          header[4] = FrameType.REQUEST;
          return header;
        },
        () => request(0, "zero"),
        () => Buffer.concat([request(id, "a b c d", 1), request(id, "again")]),
      ];
      return { bytes: input.pick(fatal)(), expect: { kind: "fatal" } };
    }
    case 6:
    case 7:
      return { bytes: input.bytes(200), expect: { kind: "any" } };
    case 8: {
      // A valid frame cut short, then the caller half-closes.
      const whole = request(id, "cut short");
      return { bytes: whole.subarray(0, input.int(whole.length)), expect: { kind: "any" } };
    }
    case 9: {
      // A valid frame whose length prefix lies.
      const whole = Buffer.from(request(id, "lying length"));
      whole.writeUInt32BE(input.pick([0, 4, 5, whole.length - 4 + 1 + input.int(100), input.int(2 ** 32)]), 0);
      return { bytes: whole, expect: { kind: "any" } };
    }
    default: {
      // A valid session (requests, credit, stop, kill), mutated.
      const session = Buffer.concat([
        request(id, "a b"),
        encodeCredit(id, 4),
        request(id + 1, "c d e", 2),
        frame(FrameType.STOP, id + 1),
        frame(FrameType.KILL, id),
      ]);
      return { bytes: input.mutate(session), expect: { kind: "any" } };
    }
  }
}

interface Observed {
  frames: { type: number; streamId: number; problem?: string }[];
  closed: boolean;
}

/** Sends one case on a fresh connection and collects what the server answers, bounded in time. */
async function runCase(address: string, fuzzCase: FuzzCase): Promise<Observed> {
  const [host, port] = address.split(":") as [string, string];
  const socket: Socket = await withTimeout("connect", 2_000, undefined, () => {
    return new Promise<Socket>((resolve, reject) => {
      const s = connect({ host, port: Number(port) }, () => resolve(s));
      s.once("error", reject);
    });
  });
  socket.on("error", () => {});
  const observed: Observed = { frames: [], closed: false };
  const { expect: expectation } = fuzzCase;
  const done = new Promise<void>((resolve) => {
    const answered = new Set<number>();
    const check = (): void => {
      if (expectation.kind !== "stream") return;
      if (answered.has(PROBE) && expectation.answers.every((id) => answered.has(id))) resolve();
    };
    const parser = new FrameParser(1 << 20, (received) => {
      const problem =
        received.type === FrameType.ERROR
          ? wireErrorProblem(received.payload)
          : received.type === FrameType.DATA || received.type === FrameType.END
            ? undefined
            : `server sent frame type ${received.type}`;
      observed.frames.push({ type: received.type, streamId: received.streamId, ...(problem ? { problem } : {}) });
      if (received.type === FrameType.END || received.type === FrameType.ERROR) answered.add(received.streamId);
      check();
    });
    socket.on("data", (chunk: Buffer) => {
      try {
        parser.push(chunk);
      } catch (err) {
        observed.frames.push({ type: -1, streamId: -1, problem: `unparsable server output: ${String(err)}` });
      }
    });
    socket.once("close", () => {
      observed.closed = true;
      resolve();
    });
  });
  socket.write(fuzzCase.bytes);
  if (expectation.kind === "stream") socket.write(request(PROBE, "probe"));
  if (expectation.kind === "any") socket.end();
  try {
    await withTimeout("server answer", 3_000, undefined, () => done);
  } finally {
    socket.destroy();
  }
  return observed;
}

describe("tcp request plane - fuzz", () => {
  let cluster: InProcessCluster;
  let address: string;

  beforeAll(async () => {
    cluster = await startInProcessCluster(1, {
      requestPlane: { kind: "tcp", host: "127.0.0.1" },
      maxFrameBytes: MAX_FRAME_BYTES,
    });
    const server = cluster.runtimes[0];
    await server?.namespace("test").component("words").endpoint("generate").serve(wordsHandler);
    const ticker: Handler<unknown, number> = async function* (_request, ctx) {
      for (let i = 0; !ctx.isKilled; i++) {
        yield i;
        await delay(20, ctx.signal).catch(() => {});
      }
    };
    await server?.namespace("test").component("ticker").endpoint("generate").serve(ticker);
    const client = await server?.namespace("test").component("words").endpoint("generate").client();
    const [instance] = (await client?.waitForInstances({ timeoutMs: 2_000 })) ?? [];
    if (!instance || !("tcp" in instance.transport)) throw new Error("no tcp instance");
    address = instance.transport.tcp;
  });

  afterAll(async () => {
    await cluster?.shutdown();
  });

  it(`tcp fuzz - ${CASES} seeded malformed inputs: the server keeps serving, bad streams get typed errors`, async () => {
    const caller = await cluster.add({ maxFrameBytes: MAX_FRAME_BYTES });
    const words = await caller.namespace("test").component("words").endpoint("generate").client();
    const tickerClient = await caller.namespace("test").component("ticker").endpoint("generate").client();
    await words.waitForInstances({ timeoutMs: 2_000 });
    await tickerClient.waitForInstances({ timeoutMs: 2_000 });
    // A well-behaved stream open for the whole run: it must never fail.
    const ticks = tickerClient.generate({});
    let tickCount = 0;
    const ticking = (async () => {
      for await (const _ of ticks) tickCount++;
    })();

    const input = new FuzzInput(mulberry32(SEED));
    const failures: string[] = [];
    const kinds = { stream: 0, fatal: 0, any: 0 };
    for (let index = 0; index < CASES && failures.length < 5; index++) {
      const fuzzCase = makeCase(input);
      kinds[fuzzCase.expect.kind]++;
      const label = `case ${index} (seed ${SEED}, ${fuzzCase.expect.kind}, bytes ${fuzzCase.bytes.subarray(0, 48).toString("hex")})`;
      let observed: Observed;
      try {
        observed = await runCase(address, fuzzCase);
      } catch (err) {
        failures.push(`${label}: ${String(err)}`);
        continue;
      }
      for (const seen of observed.frames) if (seen.problem) failures.push(`${label}: ${seen.problem}`);
      if (fuzzCase.expect.kind === "stream" && observed.closed) failures.push(`${label}: connection closed`);
      if (fuzzCase.expect.kind === "fatal") {
        const last = observed.frames.at(-1);
        if (!observed.closed) failures.push(`${label}: connection left open`);
        if (last?.type !== FrameType.ERROR || last.streamId !== 0) failures.push(`${label}: no ERROR on stream 0`);
      }
      if (index % 250 === 0) {
        const answer = await collect(words.generate({ text: `still serving ${index}` }));
        if (answer.join(" ") !== `still serving ${index}`) failures.push(`${label}: good caller got ${answer}`);
      }
    }
    expect(failures).toEqual([]);
    expect(await collect(words.generate({ text: "served to the end" }))).toEqual(["served", "to", "the", "end"]);
    const before = tickCount;
    await withTimeout("ticks", 2_000, undefined, async () => {
      while (tickCount <= before) await delay(10);
    });
    ticks.kill();
    await ticking.catch(() => {});
    // Every kind of case ran, in proportions near the generator's weights.
    expect(kinds.stream).toBeGreaterThan(CASES / 4);
    expect(kinds.fatal).toBeGreaterThan(CASES / 20);
    expect(kinds.any).toBeGreaterThan(CASES / 4);
  }, 60_000);
});
