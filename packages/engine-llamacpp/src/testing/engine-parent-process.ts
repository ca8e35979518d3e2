/**
 * A process that owns a `LlamaCppEngine`, for tests of what a terminal's
 * signals do to the engine's child. Started as `node engine-parent-process.ts
 * <modelPath>` in its own process group (as a terminal's foreground job).
 * It prints JSON lines: `ready` (with the child's pid), `streaming` once a
 * stream's first token is out; it then holds the stream (the child pauses on
 * credit) until SIGINT, reads it to its end, prints `done` with its finish
 * reason and token count, closes the engine and exits 0.
 */
import { Context } from "@tdist/runtime";
import { LlamaCppEngine } from "../llamacpp-engine.js";

const modelPath = process.argv[2];
if (modelPath === undefined) throw new Error("usage: engine-parent-process <modelPath>");

const say = (message: object): void => void process.stdout.write(`${JSON.stringify(message)}\n`);

let interrupted: () => void = () => {};
const sigint = new Promise<void>((resolve) => {
  interrupted = resolve;
});
// The parent decides what SIGINT means: here, finish the stream in flight (a drain).
process.on("SIGINT", () => {
  say({ type: "sigint" });
  interrupted();
});

const engine = await LlamaCppEngine.start({ modelPath, contextSize: 256, sequences: 1, creditWindow: 8 });
say({ type: "ready", pid: process.pid, childPid: engine.childPid });
const maxTokens = 200;
const request = {
  model: "tiny",
  tokenIds: [151644, 872, 198, 9707, 1372, 151645, 198, 151644, 77091, 198],
  sampling: { temperature: 0 },
  stop: { maxTokens, ignoreEos: true },
  eosTokenIds: [],
  output: {},
};
let tokens = 0;
let finishReason: string | undefined;
let error: string | undefined;
for await (const output of engine.generate(request, new Context())) {
  const first = tokens === 0;
  tokens += output.tokenIds.length;
  finishReason = output.finishReason ?? finishReason;
  error = output.error ?? error;
  if (first) {
    say({ type: "streaming" });
    await sigint;
  }
}
say({ type: "done", finishReason, tokens, maxTokens, ...(error !== undefined ? { error } : {}) });
await engine.close();
process.exit(0);
