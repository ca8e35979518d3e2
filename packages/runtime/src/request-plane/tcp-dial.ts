import { connect, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import type { TcpTls } from "./tcp-tls.js";

/** A dialled socket and the event that says it is ready for the protocol. */
export interface DialledSocket {
  socket: Socket;
  /** `connect` for plaintext; `secureConnect` once the server's certificate checked out. */
  readyEvent: "connect" | "secureConnect";
}

/** Opens a plaintext or (with `tls`) mutual-TLS connection to `host:port`. */
export function dialTcp(host: string, port: number, tls: TcpTls | undefined): DialledSocket {
  if (tls === undefined) return { socket: connect({ host, port, noDelay: true }), readyEvent: "connect" };
  const socket = connectTls(tls.connectOptions(host, port));
  socket.setNoDelay(true);
  return { socket, readyEvent: "secureConnect" };
}
