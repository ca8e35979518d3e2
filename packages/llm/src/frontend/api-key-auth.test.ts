import { TdistError } from "@tdist/runtime";
import { describe, expect, it } from "vitest";
import { ApiKeyAuth, unauthorizedError } from "./api-key-auth.js";

describe("api key auth", () => {
  const auth = new ApiKeyAuth(["sk-first", "sk-second"]);

  it("api key auth - any of the keys as a Bearer token passes, scheme case-insensitive", () => {
    expect(auth.check("Bearer sk-first")).toBeUndefined();
    expect(auth.check("bearer sk-second")).toBeUndefined();
    expect(auth.check("BEARER  sk-second ")).toBeUndefined();
  });

  it("api key auth - no header, another scheme or a wrong key is refused", () => {
    expect(auth.check(undefined)).toBe("missing_api_key");
    expect(auth.check("Basic c2stZmlyc3Q=")).toBe("missing_api_key");
    expect(auth.check("Bearer")).toBe("missing_api_key");
    expect(auth.check("Bearer sk-firs")).toBe("invalid_api_key");
    expect(auth.check("Bearer sk-first-and-more")).toBe("invalid_api_key");
    expect(auth.check("sk-first")).toBe("missing_api_key");
  });

  it("api key auth - an empty key list or a key that cannot travel in a header is refused, without the key", () => {
    const refused = (keys: string[]): TdistError => {
      try {
        new ApiKeyAuth(keys);
      } catch (err) {
        return err as TdistError;
      }
      throw new Error("accepted");
    };
    expect(refused([]).code).toBe("invalid_option");
    const spaced = refused(["sk-ok", "sk has space"]);
    expect(spaced).toBeInstanceOf(TdistError);
    expect(spaced.code).toBe("invalid_option");
    expect(spaced.message).not.toContain("sk has space");
    expect(refused([""]).code).toBe("invalid_option");
  });

  it("api key auth - the 401 body is OpenAI's invalid_api_key for a missing and a wrong key", () => {
    for (const refusal of ["missing_api_key", "invalid_api_key"] as const) {
      const error = unauthorizedError(refusal);
      expect(error.statusCode).toBe(401);
      expect(error.body().error).toMatchObject({ type: "invalid_request_error", code: "invalid_api_key", param: null });
    }
  });
});
