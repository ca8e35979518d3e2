import { readFile } from "node:fs/promises";
import { rootCertificates } from "node:tls";
import type { IOptions } from "etcd3";
import { TdistError } from "../errors/tdist-error.js";

/** etcd user and password (etcd's own auth, `etcdctl auth enable`). */
export interface EtcdAuthOptions {
  username: string;
  password: string;
}

/**
 * TLS to etcd: PEM files. `caFile` verifies etcd's certificate (default: the
 * system's CAs); `certFile` + `keyFile` add a client certificate, for etcd
 * run with `--client-cert-auth`. Endpoints must be `https://`.
 */
export interface EtcdTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** Checks the shapes; files are read by {@link etcdClientSecurity} when connecting. */
export function validateEtcdSecurity(
  endpoints: readonly string[],
  auth: EtcdAuthOptions | undefined,
  tls: EtcdTlsOptions | undefined,
): void {
  if (auth !== undefined) {
    if (typeof auth.username !== "string" || auth.username.length === 0) {
      throw new TdistError("invalid_option", "auth.username: expected a non-empty string");
    }
    if (typeof auth.password !== "string" || auth.password.length === 0) {
      throw new TdistError("invalid_option", "auth.password: expected a non-empty string");
    }
  }
  if (tls === undefined) return;
  for (const [name, value] of Object.entries(tls)) {
    if (value !== undefined && (typeof value !== "string" || value.length === 0)) {
      throw new TdistError("invalid_option", `tls.${name}: expected the path of a PEM file`);
    }
  }
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new TdistError("invalid_option", "tls: certFile and keyFile go together");
  }
  const plain = endpoints.find((endpoint) => !endpoint.startsWith("https://"));
  if (plain !== undefined) {
    throw new TdistError(
      "invalid_option",
      `endpoints: ${plain} is not https:// but TLS options are given; etcd over TLS needs https:// endpoints`,
    );
  }
}

async function pem(option: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new TdistError("invalid_option", `${option}: cannot read ${path} (${(err as NodeJS.ErrnoException).code})`, {
      cause: err,
    });
  }
}

/** The etcd3 client's `auth` and `credentials`, files read now (an unreadable one is `invalid_option`). */
export async function etcdClientSecurity(
  auth: EtcdAuthOptions | undefined,
  tls: EtcdTlsOptions | undefined,
): Promise<Pick<IOptions, "auth" | "credentials">> {
  const options: Pick<IOptions, "auth" | "credentials"> = {};
  if (auth !== undefined) options.auth = { username: auth.username, password: auth.password };
  if (tls?.caFile !== undefined || tls?.certFile !== undefined) {
    // etcd3 takes a root certificate whenever it takes credentials; without a CA file, Node's bundled roots.
    const credentials: NonNullable<IOptions["credentials"]> = {
      rootCertificate:
        tls.caFile === undefined ? Buffer.from(rootCertificates.join("\n")) : await pem("tls.caFile", tls.caFile),
    };
    if (tls.certFile !== undefined && tls.keyFile !== undefined) {
      credentials.certChain = await pem("tls.certFile", tls.certFile);
      credentials.privateKey = await pem("tls.keyFile", tls.keyFile);
    }
    options.credentials = credentials;
  }
  return options;
}
