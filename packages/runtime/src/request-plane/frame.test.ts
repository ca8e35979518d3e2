import { describe, expect, it } from "vitest";
import { TdistError } from "../errors/tdist-error.js";
import {
  decodeRequestPayload,
  encodeCredit,
  encodeFrame,
  encodeRequestPayload,
  encodeStringFrame,
  type Frame,
  FrameParser,
  FrameType,
} from "./frame.js";

function parseAll(chunks: Buffer[], max = 1 << 20): Frame[] {
  const frames: Frame[] = [];
  const parser = new FrameParser(max, (frame) => frames.push({ ...frame, payload: Buffer.from(frame.payload) }));
  for (const chunk of chunks) parser.push(chunk);
  return frames;
}

describe("frame codec", () => {
  it("frame - round-trips frames split at every byte boundary", () => {
    const wire = Buffer.concat([
      encodeStringFrame(FrameType.DATA, 7, '{"a":"é"}'),
      encodeFrame(FrameType.END, 7),
      encodeCredit(9, 1234),
    ]);
    for (let split = 0; split <= wire.length; split++) {
      const frames = parseAll([wire.subarray(0, split), wire.subarray(split)]);
      expect(frames.map((f) => [f.type, f.streamId])).toEqual([
        [FrameType.DATA, 7],
        [FrameType.END, 7],
        [FrameType.CREDIT, 9],
      ]);
      expect(frames[0]?.payload.toString()).toBe('{"a":"é"}');
      expect(frames[2]?.payload.readUInt32BE(0)).toBe(1234);
    }
  });

  it("frame - a large frame arriving in many chunks is assembled once", () => {
    const big = encodeFrame(FrameType.DATA, 1, Buffer.alloc(300_000, 7));
    const chunks: Buffer[] = [];
    for (let at = 0; at < big.length; at += 1000) chunks.push(big.subarray(at, at + 1000));
    const [frame] = parseAll(chunks);
    expect(frame?.payload.length).toBe(300_000);
  });

  it("frame - rejects oversize lengths before buffering and unknown types", () => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(10_000_000, 0);
    expect(() => parseAll([header], 1024)).toThrowError(/exceeds the maximum/);
    expect(() => parseAll([Buffer.from([0, 0, 0, 5, 42, 0, 0, 0, 0])])).toThrowError(/unknown frame type/);
    expect(() => parseAll([Buffer.from([0, 0, 0, 1, 1])])).toThrowError(/invalid frame length/);
  });

  it("frame - with onOversize an oversize frame is reported by its header and skipped at any split", () => {
    const wire = Buffer.concat([
      encodeStringFrame(FrameType.DATA, 3, "before"),
      encodeFrame(FrameType.DATA, 5, Buffer.alloc(3000, 1)),
      encodeStringFrame(FrameType.DATA, 3, "after"),
      encodeFrame(FrameType.END, 3),
    ]);
    for (const step of [1, 2, 7, 9, 100, 2999, wire.length]) {
      const frames: string[] = [];
      const oversize: unknown[] = [];
      const parser = new FrameParser(
        1024,
        (frame) => frames.push(`${frame.type}:${frame.streamId}:${frame.payload.toString()}`),
        (frame) => oversize.push(frame),
      );
      for (let at = 0; at < wire.length; at += step) parser.push(wire.subarray(at, at + step));
      expect(oversize).toEqual([{ type: FrameType.DATA, streamId: 5, bytes: 3009 }]);
      expect(frames).toEqual([`${FrameType.DATA}:3:before`, `${FrameType.DATA}:3:after`, `${FrameType.END}:3:`]);
    }
  });

  it("frame - request payloads round-trip and malformed ones are protocol errors", () => {
    const payload = encodeRequestPayload("ns/c/e", { requestId: "r", credit: 4 }, Buffer.from("{}"));
    const head = decodeRequestPayload(payload);
    expect(head.path).toBe("ns/c/e");
    expect(head.headers).toEqual({ requestId: "r", credit: 4 });
    expect(head.body.toString()).toBe("{}");
    for (const bad of [
      Buffer.from([0]),
      Buffer.from([0, 9, 1]),
      encodeRequestPayload("p", { requestId: "r", credit: 0 }, Buffer.alloc(0)),
    ]) {
      try {
        decodeRequestPayload(bad);
        expect.unreachable();
      } catch (err) {
        expect(TdistError.is(err, "protocol_error")).toBe(true);
      }
    }
  });
});
