import { describe, expect, it } from "vitest";
import { parseMetrics } from "./server-probe.js";
import { judgeResponse, MAX_TOKENS, MIN_TOKENS, soakRequest } from "./soak-requests.js";

const streamOf = (...events: string[]): string => events.map((event) => `data: ${event}\n\n`).join("");
const finishChunk = JSON.stringify({ choices: [{ index: 0, text: "x", finish_reason: "length" }] });
const usageChunk = (tokens: number): string => JSON.stringify({ choices: [], usage: { completion_tokens: tokens } });

describe("soak requests", () => {
  it("soak requests - the mix takes the four kinds in turn, each answer 32 to 128 tokens long", () => {
    const kinds = [0, 1, 2, 3].map((index) => soakRequest(index, "mocker"));
    expect(kinds.map((r) => [r.path, r.stream])).toEqual([
      ["/v1/chat/completions", true],
      ["/v1/chat/completions", false],
      ["/v1/completions", true],
      ["/v1/completions", false],
    ]);
    const lengths = Array.from({ length: 2_000 }, (_, index) => soakRequest(index, "mocker").maxTokens);
    expect(Math.min(...lengths)).toBe(MIN_TOKENS);
    expect(Math.max(...lengths)).toBe(MAX_TOKENS);
    expect(soakRequest(7, "mocker")).toEqual(soakRequest(7, "mocker"));
    expect(JSON.parse(soakRequest(0, "mocker").body).stream_options).toEqual({ include_usage: true });
  });

  it("soak requests - a whole stream or body is judged ok", () => {
    const stream = soakRequest(0, "mocker");
    const whole = streamOf(finishChunk, usageChunk(stream.maxTokens), "[DONE]");
    expect(judgeResponse(stream, 200, whole)).toEqual({ ok: true });
    const unary = soakRequest(1, "mocker");
    const body = JSON.stringify({
      choices: [{ finish_reason: "length" }],
      usage: { completion_tokens: unary.maxTokens },
    });
    expect(judgeResponse(unary, 200, body)).toEqual({ ok: true });
  });

  it("soak requests - a cut, short, failed or refused answer is an error", () => {
    const stream = soakRequest(0, "mocker");
    const tokens = stream.maxTokens;
    const cases: [number, string][] = [
      [200, streamOf(finishChunk, usageChunk(tokens))],
      [200, streamOf(finishChunk, usageChunk(tokens - 1), "[DONE]")],
      [200, streamOf(usageChunk(tokens), "[DONE]")],
      [200, streamOf(JSON.stringify({ error: { code: "internal" } }), "[DONE]")],
      [200, streamOf("{not json", "[DONE]")],
      [503, streamOf(finishChunk, usageChunk(tokens), "[DONE]")],
    ];
    for (const [status, text] of cases) expect(judgeResponse(stream, status, text).ok).toBe(false);
    expect(judgeResponse(soakRequest(1, "mocker"), 200, "<html>").ok).toBe(false);
  });

  it("soak requests - unlabelled Prometheus samples are read by name, labelled ones skipped", () => {
    const samples = parseMetrics(
      [
        "# HELP nodejs_active_handles_total Total",
        'nodejs_active_handles{type="Socket"} 2',
        "nodejs_active_handles_total 5",
        "nodejs_eventloop_lag_p99_seconds 0.0125",
      ].join("\n"),
    );
    expect(samples.get("nodejs_active_handles_total")).toBe(5);
    expect(samples.get("nodejs_eventloop_lag_p99_seconds")).toBe(0.0125);
    expect(samples.has("nodejs_active_handles")).toBe(false);
  });
});
