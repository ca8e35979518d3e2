import { createHash, generateKeyPairSync, type KeyObject, sign } from "node:crypto";

/**
 * A NATS operator, one account and one user of it, as `nsc` would make them
 * (decentralised JWT auth): the server trusts the operator, preloads the
 * account, and a client proves it is the user with the `.creds` file
 * (the user's JWT and nkey seed). For testing credentials files against a
 * real nats-server; JetStream is enabled for the account.
 */
export interface NatsJwtSetup {
  /** The operator, resolver and preloaded account, as nats-server configuration. */
  readonly serverConfig: string;
  /** The `.creds` file's text for the user. */
  readonly userCreds: string;
  /** The user's nkey seed (`SU...`): the secret in `userCreds`. */
  readonly userSeed: string;
  readonly accountPublicKey: string;
}

// nkey type bytes (github.com/nats-io/nkeys): the first base32 letter is the key's kind.
const prefixSeed = 18 << 3; // 'S'
const prefixOperator = 14 << 3; // 'O'
const prefixAccount = 0; // 'A'
const prefixUser = 20 << 3; // 'U'

interface NKey {
  publicKey: string;
  seed: string;
  privateKey: KeyObject;
}

/** Makes the operator, account and user, each a fresh ed25519 key. */
export function makeNatsJwtSetup(): NatsJwtSetup {
  const operator = nkey(prefixOperator);
  const account = nkey(prefixAccount);
  // nats-server 2.9 starts JetStream in operator mode only with a system account.
  const system = nkey(prefixAccount);
  const systemJwt = signJwt(operator, system.publicKey, "SYS", {
    limits: { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 },
    default_permissions: { pub: {}, sub: {} },
    type: "account",
    version: 2,
  });
  const user = nkey(prefixUser);
  const operatorJwt = signJwt(operator, operator.publicKey, "tdist-testkit", { type: "operator", version: 2 });
  const accountJwt = signJwt(operator, account.publicKey, "tdist", {
    limits: {
      subs: -1,
      data: -1,
      payload: -1,
      imports: -1,
      exports: -1,
      wildcards: true,
      conn: -1,
      leaf: -1,
      mem_storage: -1,
      disk_storage: -1,
      streams: -1,
      consumer: -1,
    },
    default_permissions: { pub: {}, sub: {} },
    type: "account",
    version: 2,
  });
  const userJwt = signJwt(account, user.publicKey, "tdist-user", {
    pub: {},
    sub: {},
    subs: -1,
    data: -1,
    payload: -1,
    type: "user",
    version: 2,
  });
  const serverConfig = [
    `operator: ${operatorJwt}`,
    `system_account: ${system.publicKey}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${account.publicKey}: ${accountJwt}`,
    `  ${system.publicKey}: ${systemJwt}`,
    "}",
    "",
  ].join("\n");
  return {
    serverConfig,
    userCreds: credsFile(userJwt, user.seed),
    userSeed: user.seed,
    accountPublicKey: account.publicKey,
  };
}

function nkey(prefix: number): NKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = (key: string | undefined): Buffer => Buffer.from(key ?? "", "base64url");
  const seedBytes = raw(privateKey.export({ format: "jwk" }).d);
  const publicBytes = raw(publicKey.export({ format: "jwk" }).x);
  const seed = encode(Buffer.from([prefixSeed | (prefix >> 5), (prefix & 31) << 3]), seedBytes);
  return { publicKey: encode(Buffer.from([prefix]), publicBytes), seed, privateKey };
}

/** prefix, key bytes, CRC-16/XMODEM (little-endian), base32 without padding. */
function encode(prefix: Buffer, key: Buffer): string {
  const payload = Buffer.concat([prefix, key]);
  const checksum = Buffer.alloc(2);
  checksum.writeUInt16LE(crc16(payload));
  return base32(Buffer.concat([payload, checksum]));
}

function crc16(bytes: Buffer): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32(bytes: Buffer): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(buffer << (5 - bits)) & 31];
  return out;
}

/** A NATS JWT (v2): ed25519-nkey signed, `jti` the claims' hash. */
function signJwt(issuer: NKey, subject: string, name: string, nats: object): string {
  const header = { typ: "JWT", alg: "ed25519-nkey" };
  const claims = { jti: "", iat: Math.floor(Date.now() / 1000), iss: issuer.publicKey, name, sub: subject, nats };
  claims.jti = base32(createHash("sha256").update(JSON.stringify(claims)).digest());
  const signingInput = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
  const signature = sign(null, Buffer.from(signingInput), issuer.privateKey).toString("base64url");
  return `${signingInput}.${signature}`;
}

function b64(text: string): string {
  return Buffer.from(text).toString("base64url");
}

function credsFile(jwt: string, seed: string): string {
  return [
    "-----BEGIN NATS USER JWT-----",
    jwt,
    "------END NATS USER JWT------",
    "",
    "************************* IMPORTANT *************************",
    "NKEY Seed printed below can be used to sign and prove identity.",
    "NKEYs are sensitive and should be treated as secrets.",
    "",
    "-----BEGIN USER NKEY SEED-----",
    seed,
    "------END USER NKEY SEED------",
    "",
    "*************************************************************",
    "",
  ].join("\n");
}
