import { isErrorCode } from "../errors/error-codes.js";

/**
 * Seeded generators of malformed request-plane input, shared by the TCP and
 * NATS fuzz tests: both planes carry the same REQUEST payload
 * (`u16 pathLen | path | u16 headersLen | JSON headers | body`).
 */
export class FuzzInput {
  constructor(readonly random: () => number) {}

  int(maxExclusive: number): number {
    return Math.floor(this.random() * maxExclusive);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  bytes(maxLength: number): Buffer {
    const out = Buffer.allocUnsafe(this.int(maxLength + 1));
    for (let i = 0; i < out.length; i++) out[i] = this.int(256);
    return out;
  }

  /** Flips, inserts, deletes or overwrites a few bytes of `input`. */
  mutate(input: Buffer): Buffer {
    let out = Buffer.from(input);
    const edits = 1 + this.int(4);
    for (let i = 0; i < edits; i++) {
      const at = this.int(out.length + 1);
      switch (this.int(4)) {
        case 0:
          if (at < out.length) out[at] = (out[at] as number) ^ (1 << this.int(8));
          break;
        case 1:
          out = Buffer.concat([out.subarray(0, at), this.bytes(8), out.subarray(at)]);
          break;
        case 2:
          out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + this.int(8))]);
          break;
        default:
          if (at < out.length) out[at] = this.pick([0, 0xff, 0x7f, 0x80, 0x22, 0x7b]);
      }
    }
    return out;
  }

  /** REQUEST headers a caller should never send, and now and then valid ones. */
  headers(): Buffer {
    const valid = { requestId: `fuzz-${this.int(1e6)}`, credit: 8 };
    const variants: unknown[] = [
      valid,
      { ...valid, credit: 1_000_000_000 },
      { ...valid, annotations: { a: "b" } },
      {},
      null,
      [],
      "headers",
      42,
      { requestId: 5, credit: 8 },
      { requestId: "r" },
      { requestId: "r", credit: 0 },
      { requestId: "r", credit: -3 },
      { requestId: "r", credit: 1.5 },
      { requestId: "r", credit: "8" },
      { requestId: "r", credit: 8, annotations: "x" },
      { requestId: "r", credit: 8, annotations: [1, 2] },
      { requestId: "r", credit: 8, annotations: { a: 1 } },
      { requestId: "r", credit: 8, annotations: null },
      { requestId: "r", credit: 8, deadline: "soon" },
      { requestId: "r", credit: 8, deadline: null },
      { requestId: "x".repeat(2000), credit: 8 },
      { ["__proto__"]: { credit: 8 }, requestId: "r" },
    ];
    switch (this.int(4)) {
      case 0:
        return this.bytes(40);
      case 1:
        return this.mutate(Buffer.from(JSON.stringify(valid)));
      default:
        return Buffer.from(JSON.stringify(this.pick(variants)) ?? "");
    }
  }

  /** Request bodies: valid, valid JSON of the wrong shape, and not JSON at all. */
  body(): Buffer {
    const variants = [
      '{"text":"a b"}',
      '{"text":"fuzz"}',
      '{"text":5}',
      '{"text":null}',
      "{}",
      "null",
      "[]",
      '"text"',
      "{",
      "",
      `${"[".repeat(5000)}${"]".repeat(5000)}`,
      '{"text":"\\ud800"}',
    ];
    switch (this.int(4)) {
      case 0:
        return this.bytes(60);
      case 1:
        return this.mutate(Buffer.from('{"text":"a b"}'));
      default:
        return Buffer.from(this.pick(variants));
    }
  }

  path(valid: string): Buffer {
    switch (this.int(6)) {
      case 0:
        return Buffer.from("test/nobody/generate");
      case 1:
        return Buffer.alloc(0);
      case 2:
        return this.bytes(30);
      case 3:
        return Buffer.from([0xc3, 0x28, 0xff]);
      default:
        return Buffer.from(valid);
    }
  }

  /** A REQUEST payload from the parts above, its length fields sometimes wrong. */
  requestPayload(validPath: string): Buffer {
    const path = this.path(validPath);
    const headers = this.headers();
    const body = this.body();
    const pathLength = this.int(8) === 0 ? this.int(0x10000) : path.length;
    const headersLength = this.int(8) === 0 ? this.int(0x10000) : headers.length;
    const lengths = Buffer.allocUnsafe(4);
    lengths.writeUInt16BE(pathLength & 0xffff, 0);
    lengths.writeUInt16BE(headersLength & 0xffff, 2);
    const payload = Buffer.concat([lengths.subarray(0, 2), path, lengths.subarray(2), headers, body]);
    return this.int(10) === 0 ? payload.subarray(0, this.int(payload.length + 1)) : payload;
  }
}

/** Problems with an ERROR body received from a server: undefined when it is a typed wire error. */
export function wireErrorProblem(body: Buffer): string | undefined {
  let wire: unknown;
  try {
    wire = JSON.parse(body.toString("utf8"));
  } catch {
    return `ERROR body is not JSON: ${body.toString("utf8").slice(0, 80)}`;
  }
  const { code, category, message } = (wire ?? {}) as { code?: unknown; category?: unknown; message?: unknown };
  if (!isErrorCode(code)) return `ERROR code ${String(code)} is not a registered code`;
  if (typeof category !== "string" || typeof message !== "string") return "ERROR lacks a category or message";
  return undefined;
}
