import { readFileSync } from "node:fs";
import { type ConnectionOptions, credsAuthenticator } from "@nats-io/transport-node";
import { TdistError } from "../errors/tdist-error.js";

/**
 * How a NATS client proves who it is; at most one way: a token, a user name
 * and password, or a credentials file (a user JWT and its nkey seed, as `nsc`
 * writes them). A server URL may carry `user:password@` or `token@` instead.
 */
export interface NatsAuthOptions {
  token?: string;
  user?: string;
  password?: string;
  /** Path of a `.creds` file; read when connecting, so a rotated file is picked up by the next process. */
  credsFile?: string;
}

/** TLS to nats-server: PEM files. `caFile` alone verifies the server; `certFile` + `keyFile` add a client certificate. */
export interface NatsTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** What `connectNats` passes to the client: servers without credentials, and the credentials apart. */
export interface NatsSecurity {
  /** Server URLs with any `user:password@` removed: safe to log. */
  servers: string[];
  connectOptions: Pick<ConnectionOptions, "token" | "user" | "pass" | "authenticator" | "tls">;
  /** "token", "user", "creds" or "none", for log lines and messages. */
  authKind: "token" | "user" | "creds" | "none";
}

/**
 * Moves credentials out of NATS server URLs (`nats://user:password@host:4222`
 * or `nats://token@host:4222`) into {@link NatsAuthOptions}, so the URLs can
 * be logged. Every URL must carry the same credentials or none.
 */
export function splitNatsUrlCredentials(urls: readonly string[]): { urls: string[]; auth: NatsAuthOptions } {
  let found: NatsAuthOptions | undefined;
  let foundKey: string | undefined;
  const stripped = urls.map((raw, index) => {
    if (typeof raw !== "string" || !raw.includes("@")) return raw;
    let url: URL;
    try {
      url = new URL(raw.includes("://") ? raw : `nats://${raw}`);
    } catch {
      // The text may hold a password: name the URL by position only.
      throw new TdistError("invalid_option", `url: NATS server URL #${index + 1} is not a valid URL`);
    }
    if (url.username === "" && url.password === "") return raw;
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    const auth: NatsAuthOptions = url.password === "" ? { token: user } : { user, password };
    const key = JSON.stringify(auth);
    if (foundKey !== undefined && foundKey !== key) {
      throw new TdistError("invalid_option", "url: the NATS server URLs carry different credentials; give one set");
    }
    found = auth;
    foundKey = key;
    url.username = "";
    url.password = "";
    return raw.includes("://") ? url.toString().replace(/\/$/, "") : url.host;
  });
  return { urls: stripped, auth: found ?? {} };
}

function nonEmpty(option: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new TdistError("invalid_option", `${option}: expected a non-empty string`);
  }
  return value;
}

function readable(option: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TdistError("invalid_option", `${option}: cannot read ${path} (${(err as NodeJS.ErrnoException).code})`, {
      cause: err,
    });
  }
}

/**
 * Validates the options and turns them into client options: URL credentials
 * moved out, at most one way to authenticate, every file readable (a missing
 * file is an `invalid_option` naming it, never retried as if the server were down).
 */
export function resolveNatsSecurity(
  urls: readonly string[],
  auth: NatsAuthOptions | undefined,
  tls: NatsTlsOptions | undefined,
): NatsSecurity {
  const split = splitNatsUrlCredentials(urls);
  const given = auth ?? {};
  const hasGiven = Object.values(given).some((value) => value !== undefined);
  const fromUrl = Object.keys(split.auth).length > 0;
  if (hasGiven && fromUrl) {
    throw new TdistError("invalid_option", "url carries NATS credentials and auth options are given too; use one");
  }
  const effective = fromUrl ? split.auth : given;
  const ways = [
    effective.token !== undefined,
    effective.user !== undefined || effective.password !== undefined,
    effective.credsFile !== undefined,
  ].filter(Boolean).length;
  if (ways > 1) {
    throw new TdistError("invalid_option", "auth: give one of token, user and password, or credsFile");
  }
  const connectOptions: NatsSecurity["connectOptions"] = {};
  let authKind: NatsSecurity["authKind"] = "none";
  if (effective.token !== undefined) {
    connectOptions.token = nonEmpty("auth.token", effective.token);
    authKind = "token";
  } else if (effective.user !== undefined || effective.password !== undefined) {
    connectOptions.user = nonEmpty("auth.user", effective.user);
    connectOptions.pass = nonEmpty("auth.password", effective.password);
    authKind = "user";
  } else if (effective.credsFile !== undefined) {
    const path = nonEmpty("auth.credsFile", effective.credsFile);
    const authenticator = credsAuthenticator(new Uint8Array(readable("auth.credsFile", path)));
    try {
      // The client parses the file only when the server asks; a bad file should fail here, by name.
      authenticator("tdist-check");
    } catch (err) {
      throw new TdistError("invalid_option", `auth.credsFile: ${path} is not a NATS credentials file (JWT and seed)`, {
        cause: err,
      });
    }
    connectOptions.authenticator = authenticator;
    authKind = "creds";
  }
  if (tls !== undefined) {
    const { caFile, certFile, keyFile } = tls;
    if ((certFile === undefined) !== (keyFile === undefined)) {
      throw new TdistError("invalid_option", "tls: certFile and keyFile go together");
    }
    // Read now so a wrong path fails here, naming the option; the client reads them again per connection.
    if (caFile !== undefined) readable("tls.caFile", nonEmpty("tls.caFile", caFile));
    if (certFile !== undefined) readable("tls.certFile", nonEmpty("tls.certFile", certFile));
    if (keyFile !== undefined) readable("tls.keyFile", nonEmpty("tls.keyFile", keyFile));
    connectOptions.tls = {
      ...(caFile === undefined ? {} : { caFile }),
      ...(certFile === undefined ? {} : { certFile, keyFile }),
    };
  }
  return { servers: split.urls, connectOptions, authKind };
}

/** The servers as a log line or message may name them: comma-separated, any credentials in them replaced by `***`. */
export function natsServersForLog(url: string | readonly string[]): string {
  const urls = typeof url === "string" ? [url] : url;
  return urls
    .map((raw) => {
      if (typeof raw !== "string") return String(raw);
      if (!raw.includes("@")) return raw;
      // Everything between the scheme and the last '@' is user information.
      return raw.replace(
        /^([a-z][a-z0-9+.-]*:\/\/)?[^/]*@/i,
        (_match, scheme: string | undefined) => `${scheme ?? ""}***@`,
      );
    })
    .join(",");
}
