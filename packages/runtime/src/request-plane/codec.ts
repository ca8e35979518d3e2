import { TdistError } from "../errors/tdist-error.js";

/**
 * How request and response bodies become bytes. JSON by default; the seam
 * lets a msgpack codec slot in later without touching the planes.
 */
export interface Codec {
  readonly name: string;
  encode(value: unknown): string | Uint8Array;
  decode(bytes: Buffer): unknown;
}

export const jsonCodec: Codec = {
  name: "json",
  encode(value) {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TdistError("codec_error", "value is not JSON-serialisable");
    return text;
  },
  decode(bytes) {
    try {
      return JSON.parse(bytes.toString("utf8"));
    } catch (err) {
      throw TdistError.wrap(err, "codec_error", "body is not valid JSON");
    }
  },
};
