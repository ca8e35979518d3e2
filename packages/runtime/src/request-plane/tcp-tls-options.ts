import { readEnv } from "../config/env-var.js";
import { Env } from "../config/environment.js";
import { TdistError } from "../errors/tdist-error.js";
import { TcpTls, type TcpTlsOptions } from "./tcp-tls.js";

/**
 * The TCP TLS setting: the option when given (`false` turns TLS off whatever
 * the environment says), else `TDIST_TCP_TLS_CERT` / `KEY` / `CA`, all three
 * or none. The files are read and checked here, once.
 */
export function resolveTcpTls(given: TcpTlsOptions | false | undefined, env: NodeJS.ProcessEnv): TcpTls | undefined {
  if (given === false) return undefined;
  if (given !== undefined) return TcpTls.load(given);
  const files = {
    certFile: readEnv(Env.tcpTlsCert, env),
    keyFile: readEnv(Env.tcpTlsKey, env),
    caFile: readEnv(Env.tcpTlsCa, env),
  };
  const names = { certFile: Env.tcpTlsCert.name, keyFile: Env.tcpTlsKey.name, caFile: Env.tcpTlsCa.name };
  const missing = (Object.keys(files) as (keyof TcpTlsOptions)[]).filter((key) => files[key] === "");
  if (missing.length === 3) return undefined;
  if (missing.length > 0) {
    throw new TdistError(
      "invalid_option",
      `TCP TLS needs ${names.certFile}, ${names.keyFile} and ${names.caFile} together; unset: ${missing
        .map((key) => names[key])
        .join(", ")}`,
    );
  }
  return TcpTls.load(files);
}
