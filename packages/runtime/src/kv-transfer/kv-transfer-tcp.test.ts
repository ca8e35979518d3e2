import { describeKvTransferSuite } from "../testing/kv-transfer-suite.js";

// Without its process-local id the handle is fetched over the listener, as from another process.
// Measured: about 5 MiB ahead (socket buffers) of a paused consumer; 256 MiB without backpressure.
describeKvTransferSuite("tcp", {
  runtimeOptions: () => ({ kvTransfer: { kind: "tcp", host: "127.0.0.1" } }),
  route: ({ address, ...handle }) => ({ ...handle, address: { tcp: address.tcp } }),
  maxBufferedBytes: 16 * 1024 * 1024,
});
