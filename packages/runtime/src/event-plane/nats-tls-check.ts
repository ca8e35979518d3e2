import { readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { NatsTlsOptions } from "./nats-security.js";

/**
 * Opens one TLS session to nats-server as the client would (INFO in clear,
 * then the upgrade) and sends a PING. Resolves once the server answers
 * anything; rejects with the socket's error (a TLS code such as
 * `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`) otherwise.
 *
 * Why: when the server refuses the client's certificate (TLS 1.3 sends that
 * alert after the client's handshake has completed), the NATS client sees a
 * closed socket and waits out its whole connect timeout, so a missing or
 * wrong client certificate would look like a server that is down.
 */
export function checkNatsTls(server: string, tls: NatsTlsOptions, timeoutMs: number): Promise<void> {
  const url = new URL(server.includes("://") ? server : `nats://${server}`);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || 4222);
  return new Promise((resolve, reject) => {
    const raw = tcpConnect({ host, port });
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      raw.destroy();
      if (err) reject(err);
      else resolve();
    };
    // Running out of time says nothing about TLS: the caller's own connect attempt decides.
    const timer = setTimeout(() => finish(), timeoutMs);
    raw.once("error", finish);
    let info = "";
    const onInfo = (chunk: Buffer): void => {
      info += chunk.toString("latin1");
      if (!info.includes("\r\n")) return;
      raw.off("data", onInfo);
      const secure = tlsConnect({
        socket: raw,
        ...(isIp(host) ? {} : { servername: host }),
        ...(tls.caFile ? { ca: readFileSync(tls.caFile) } : {}),
        ...(tls.certFile && tls.keyFile ? { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) } : {}),
      });
      secure.once("error", finish);
      secure.once("secureConnect", () => secure.write("PING\r\n"));
      secure.once("data", () => finish());
      secure.once("end", () => finish(new Error("nats-server closed the TLS connection")));
    };
    raw.on("data", onInfo);
  });
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(":");
}
