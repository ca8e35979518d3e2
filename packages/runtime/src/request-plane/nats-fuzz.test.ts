import { connect, type NatsConnection } from "@nats-io/transport-node";
import { type InProcessCluster, type NatsServer, startInProcessCluster, startNats } from "@tdist/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Handler } from "../handler.js";
import { FuzzInput, wireErrorProblem } from "../testing/request-plane-fuzz.js";
import { collect, wordsHandler } from "../testing/request-plane-suite.js";
import { delay, withTimeout } from "../util/abort.js";
import { mulberry32 } from "../util/seeded-random.js";
import { encodeRequestPayload } from "./frame.js";
import {
  asBuffer,
  controlSubjectOf,
  decodeResponse,
  encodeCreditMessage,
  NatsMessageType,
  RESPONSE_HEADER_BYTES,
} from "./nats-wire.js";

const SEED = 0x5eed;
const CASES = 3_000;
const WORDS = "test/words/generate";
const INBOX = "_INBOX.fuzz";

/**
 * What a case expects: `answers` are response subjects that must each end
 * (END or a typed ERROR); `none` cases (no reply subject, control messages
 * for no stream, random types) get no answer and must change nothing.
 */
interface FuzzCase {
  messages: { data: Uint8Array; reply?: string }[];
  answers: string[];
}

function requestMessage(payload: Buffer): Buffer {
  return Buffer.concat([Buffer.of(NatsMessageType.REQUEST), payload]);
}

function validRequest(text: string, credit = 8): Buffer {
  return requestMessage(
    encodeRequestPayload(WORDS, { requestId: "fuzz", credit }, Buffer.from(JSON.stringify({ text }))),
  );
}

function makeCase(input: FuzzInput, index: number): FuzzCase {
  const reply = `${INBOX}.${index}`;
  switch (input.int(8)) {
    case 0:
    case 1:
    case 2:
      // REQUESTs with any payload: each is answered on its reply subject.
      return { messages: [{ data: requestMessage(input.requestPayload(WORDS)), reply }], answers: [reply] };
    case 3:
      // No reply subject: nowhere to answer; dropped.
      return { messages: [{ data: requestMessage(input.requestPayload(WORDS)) }], answers: [] };
    case 4: {
      // Random bytes under any type, with a control-shaped, response-shaped or no reply subject.
      const data = input.bytes(80);
      if (data[0] === NatsMessageType.REQUEST) data[0] = NatsMessageType.PING;
      const subject = input.pick([undefined, reply, controlSubjectOf(`${reply}.unknown`)]);
      return { messages: [{ data, ...(subject ? { reply: subject } : {}) }], answers: [] };
    }
    case 5: {
      // A stream paused for credit: malformed CREDIT is ignored, huge CREDIT lets it finish.
      const control = controlSubjectOf(reply);
      const junk = input.pick([Buffer.of(NatsMessageType.CREDIT), Buffer.alloc(9, NatsMessageType.CREDIT)]);
      return {
        messages: [
          { data: validRequest("a b c d", 1), reply },
          { data: junk, reply: control },
          { data: encodeCreditMessage(0xffff_ffff), reply: control },
        ],
        answers: [reply],
      };
    }
    case 6:
      // A second REQUEST for a reply subject already streaming is dropped; the first goes on.
      return {
        messages: [
          { data: validRequest("one two three", 1), reply },
          { data: validRequest("duplicate"), reply },
          { data: encodeCreditMessage(8), reply: controlSubjectOf(reply) },
        ],
        answers: [reply],
      };
    default:
      return { messages: [{ data: input.mutate(validRequest("a b")), reply }], answers: [] };
  }
}

describe("nats request plane - fuzz", () => {
  let nats: NatsServer;
  let cluster: InProcessCluster;
  let raw: NatsConnection;
  let subject: string;

  beforeAll(async () => {
    nats = await startNats({ jetstream: false });
    cluster = await startInProcessCluster(1, { requestPlane: { kind: "nats", url: nats.url } });
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
    if (!instance || !("nats" in instance.transport)) throw new Error("no nats instance");
    subject = instance.transport.nats;
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await raw?.close();
    await cluster?.shutdown();
    await nats?.stop();
  });

  it(`nats fuzz - ${CASES} seeded malformed messages: the server keeps serving, bad requests get typed errors`, async () => {
    const caller = await cluster.add({ requestPlane: { kind: "nats", url: nats.url } });
    const words = await caller.namespace("test").component("words").endpoint("generate").client();
    const tickerClient = await caller.namespace("test").component("ticker").endpoint("generate").client();
    await words.waitForInstances({ timeoutMs: 2_000 });
    await tickerClient.waitForInstances({ timeoutMs: 2_000 });
    const ticks = tickerClient.generate({});
    let tickCount = 0;
    const ticking = (async () => {
      for await (const _ of ticks) tickCount++;
    })();

    // Every response the server sends to the fuzz inbox, by subject; waiters wake on END or ERROR.
    const failures: string[] = [];
    const ended = new Set<string>();
    const waiters = new Map<string, () => void>();
    const responses = raw.subscribe(`${INBOX}.>`, {
      callback: (_err, msg) => {
        const data = asBuffer(msg.data);
        let type: number;
        try {
          type = decodeResponse(data).type;
        } catch (err) {
          failures.push(`${msg.subject}: undecodable response: ${String(err)}`);
          return;
        }
        if (type === NatsMessageType.ERROR) {
          const problem = wireErrorProblem(data.subarray(RESPONSE_HEADER_BYTES));
          if (problem) failures.push(`${msg.subject}: ${problem}`);
        }
        if (type === NatsMessageType.END || type === NatsMessageType.ERROR) {
          ended.add(msg.subject);
          waiters.get(msg.subject)?.();
        }
      },
    });
    await raw.flush();

    const input = new FuzzInput(mulberry32(SEED));
    let answered = 0;
    for (let index = 0; index < CASES && failures.length < 5; index++) {
      const fuzzCase = makeCase(input, index);
      const label = `case ${index} (seed ${SEED})`;
      const answers = fuzzCase.answers.map(
        (reply) =>
          new Promise<void>((resolve) => {
            if (ended.has(reply)) resolve();
            else waiters.set(reply, resolve);
          }),
      );
      for (const message of fuzzCase.messages) {
        raw.publish(subject, message.data, message.reply ? { reply: message.reply } : {});
      }
      try {
        await withTimeout("answer", 3_000, undefined, () => Promise.all(answers));
        answered += answers.length;
      } catch {
        failures.push(`${label}: no END or ERROR on ${fuzzCase.answers.join(", ")}`);
      }
      for (const reply of fuzzCase.answers) waiters.delete(reply);
      if (index % 250 === 0) {
        const answer = await collect(words.generate({ text: `still serving ${index}` }));
        if (answer.join(" ") !== `still serving ${index}`) failures.push(`${label}: good caller got ${answer}`);
      }
    }
    responses.unsubscribe();
    expect(failures).toEqual([]);
    expect(answered).toBeGreaterThan(CASES / 4);
    expect(await collect(words.generate({ text: "served to the end" }))).toEqual(["served", "to", "the", "end"]);
    const before = tickCount;
    await withTimeout("ticks", 2_000, undefined, async () => {
      while (tickCount <= before) await delay(10);
    });
    ticks.kill();
    await ticking.catch(() => {});
  }, 60_000);
});
