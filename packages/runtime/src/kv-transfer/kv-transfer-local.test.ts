import { describeKvTransferSuite } from "../testing/kv-transfer-suite.js";

// One process: the hand-off pulls the source directly, so at most the chunk in hand is ahead.
describeKvTransferSuite("local", {
  runtimeOptions: () => ({ kvTransfer: { kind: "local" } }),
  route: (handle) => handle,
  maxBufferedBytes: 1024 * 1024,
});
