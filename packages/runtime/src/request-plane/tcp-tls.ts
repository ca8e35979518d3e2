import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { type ConnectionOptions, createSecureContext, type TlsOptions } from "node:tls";
import { inspect } from "node:util";
import { TdistError } from "../errors/tdist-error.js";

/**
 * Mutual TLS for the TCP request plane and the KV transfer listener: PEM
 * files of this process's certificate and key and of the CA that signed every
 * process's certificate in the cluster.
 */
export interface TcpTlsOptions {
  certFile: string;
  keyFile: string;
  caFile: string;
}

/** The TLS record type of a handshake: the first byte a TLS client sends. */
export const TLS_HANDSHAKE_BYTE = 0x16;

/**
 * Loaded TCP TLS credentials. Servers require a client certificate signed by
 * the CA; clients check the server's certificate against the CA and the name
 * they dial (the advertised host: a DNS name or an IP address, which the
 * certificate must carry as a subject alternative name). Key material lives
 * in private fields, so logging or serialising the options shows only the
 * file names.
 */
export class TcpTls {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  readonly #cert: Buffer;
  readonly #key: Buffer;
  readonly #ca: Buffer;

  private constructor(options: TcpTlsOptions, cert: Buffer, key: Buffer, ca: Buffer) {
    this.certFile = options.certFile;
    this.keyFile = options.keyFile;
    this.caFile = options.caFile;
    this.#cert = cert;
    this.#key = key;
    this.#ca = ca;
  }

  /**
   * Reads and checks the files once (at startup); `invalid_option` names the
   * file and OpenSSL's reason, never the contents.
   */
  static load(options: TcpTlsOptions): TcpTls {
    const cert = readPem("certFile", options.certFile);
    const key = readPem("keyFile", options.keyFile);
    const ca = readPem("caFile", options.caFile);
    try {
      createSecureContext({ cert, key, ca });
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new TdistError(
        "invalid_option",
        `TCP TLS certificate ${options.certFile}, key ${options.keyFile} or CA ${options.caFile} does not load: ${reason}`,
      );
    }
    return new TcpTls(options, cert, key, ca);
  }

  /** For `tls.createServer`: mutual TLS, so a peer without a certificate from the CA is refused in the handshake. */
  serverOptions(): TlsOptions {
    return {
      cert: this.#cert,
      key: this.#key,
      ca: this.#ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
    };
  }

  /** For `tls.connect` to `host`: the server's certificate must name `host` and come from the CA. */
  connectOptions(host: string, port: number): ConnectionOptions {
    return {
      host,
      port,
      cert: this.#cert,
      key: this.#key,
      ca: this.#ca,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      // SNI takes host names only; an IP address is checked against the certificate's IP SANs.
      ...(isIP(host) === 0 ? { servername: host } : {}),
    };
  }

  toJSON(): TcpTlsOptions {
    return { certFile: this.certFile, keyFile: this.keyFile, caFile: this.caFile };
  }

  [inspect.custom](): string {
    return `TcpTls ${JSON.stringify(this.toJSON())}`;
  }
}

function readPem(option: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new TdistError("invalid_option", `TCP TLS ${option} ${file} cannot be read (${code})`);
  }
}

/**
 * The reason a connection failed in TLS (a certificate refused by either
 * side, a peer that does not speak TLS), or undefined for a plain socket
 * error. Node reports handshake failures as OpenSSL `ERR_SSL_*` codes,
 * `ERR_TLS_*` codes, or X.509 verification codes such as
 * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`.
 */
export function tlsFailureReason(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const { code, library } = err as NodeJS.ErrnoException & { library?: string };
  const isTls =
    library !== undefined ||
    (typeof code === "string" && (/^ERR_(SSL|TLS)_/.test(code) || X509_VERIFY_CODES.test(code)));
  if (!isTls) return undefined;
  // OpenSSL's `reason` is the readable part of a message that also carries source paths and line numbers.
  const reason = (err as { reason?: unknown }).reason;
  const text = typeof reason === "string" && reason !== "" ? reason : err.message;
  return typeof code === "string" ? `${code}: ${text}` : text;
}

const X509_VERIFY_CODES =
  /^(UNABLE_TO_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH|INVALID_CA|INVALID_PURPOSE|CERT_UNTRUSTED|CERT_REJECTED)/;
