/**
 * planterd's TCP listener, TLS only (`[api.tcp]`, plans/design.md "Targets"): a peer there has no
 * credentials the kernel vouches for, so every request must carry an identity planterd was told of
 * — a client certificate signed by `client_ca` whose CN an identity names, or a bearer token read
 * from a 0600 file — and that identity's uid then goes through the same policy and handlers as a
 * Unix-socket peer of that uid (lib/daemon/authz.ts): the TCP listener serves nothing the socket
 * would refuse that uid. Without an identity the listener does not start; a non-loopback address
 * needs `allow_remote = true`; uid 0 is never an identity here (a remote root is one stolen token away).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { closeSync, constants, fstatSync, openSync, readFileSync, readSync, type Stats } from "node:fs";
import { isIP } from "node:net";
import type { TLSSocket } from "node:tls";
import { PlanterError } from "../api/errors.ts";
import { lookupUser, read } from "../sandbox/identity.ts";
import type { Peer } from "./peer.ts";

/** `[api.tcp]` as the config schema gives it. */
export interface TcpConfig {
  address: string;
  cert: string;
  key: string;
  client_ca?: string;
  allow_remote: boolean;
  identities: { name: string; uid: number; token_file?: string; cert_cn?: string }[];
}

/** One identity, ready: its peer (uid, gid, groups) and what proves it. */
export interface TcpIdentity {
  name: string;
  peer: Peer;
  tokenHash: Buffer | null;
  certCn: string | null;
}

/** What the listener needs: TLS material and the identities. */
export interface TcpSetup {
  host: string;
  port: number;
  tls: { cert: Buffer; key: Buffer; ca?: Buffer; requestCert: boolean; rejectUnauthorized: false };
  identities: TcpIdentity[];
}

const configError = (message: string, hint: string) => new PlanterError("E_CONFIG", message, { hint });

/** `HOST:PORT` or `[V6]:PORT` as host and port; a usage error otherwise. Pure. */
export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const port = Number(m?.[3]);
  if (!m || port < 0 || port > 65535)
    throw configError(
      `[api.tcp] address ${JSON.stringify(address)} is not HOST:PORT`,
      'write it as "127.0.0.1:8443" or "[::1]:8443"',
    );
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Whether `host` is a loopback address (127/8, ::1) or localhost. Pure. */
export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || host === "0:0:0:0:0:0:0:1";
  return false;
}

/** The SHA-256 of a token: what is kept and compared (fixed length, so the comparison takes equal time). */
function digest(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/**
 * A secret file's status and text, both from one open descriptor: what was checked is what was
 * read (a path looked up twice could name another file the second time, if a directory on the way
 * is another user's). Non-blocking, so a FIFO there never stalls planterd; at most 64 KiB.
 */
export function readSecretFile(path: string): { st: Stats; text: string } {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { st, text: "" };
    const buf = Buffer.alloc(Math.min(st.size, 64 * 1024));
    let at = 0;
    while (at < buf.length) {
      const n = readSync(fd, buf, at, buf.length - at, at);
      if (n === 0) break;
      at += n;
    }
    return { st, text: buf.subarray(0, at).toString("utf8") };
  } finally {
    closeSync(fd);
  }
}

/**
 * A token file's secret: a regular file, no bits for group or others, owned by planterd's uid or
 * root (else whoever owns it can change who gets in), at least 16 characters.
 */
export function readTokenFile(path: string, selfUid: number): string {
  let st: Stats;
  let text: string;
  try {
    ({ st, text } = readSecretFile(path));
  } catch (e) {
    throw configError(`[api.tcp] token file ${path}: ${(e as Error).message}`, "name an existing file");
  }
  if (!st.isFile()) throw configError(`[api.tcp] token file ${path} is not a regular file`, "name a file");
  if ((st.mode & 0o077) !== 0)
    throw configError(
      `[api.tcp] token file ${path} has mode ${(st.mode & 0o777).toString(8)}: others could read the token`,
      `chmod 600 ${path}`,
    );
  if (st.uid !== selfUid && st.uid !== 0)
    throw configError(
      `[api.tcp] token file ${path} is owned by uid ${st.uid}, not by planterd (uid ${selfUid}) or root`,
      `chown it to planterd's user: its owner could change who gets in`,
    );
  const token = text.trim();
  if (token.length < 16)
    throw configError(
      `[api.tcp] token file ${path} holds a token of ${token.length} characters: at least 16`,
      "make one with: openssl rand -hex 32 > FILE && chmod 600 FILE",
    );
  return token;
}

/** A uid as a peer: its passwd gid and every group that lists its name (as a login would have them). */
export function peerOfUid(uid: number, groupFile = "/etc/group"): Peer {
  const user = lookupUser(uid);
  if (!user)
    throw configError(`[api.tcp] identity uid ${uid} is not a user of this host`, "name a uid /etc/passwd has");
  const groups = new Set<number>([user.gid]);
  for (const line of read(groupFile).split("\n")) {
    const [, , gid, members] = line.split(":");
    if (gid !== undefined && members?.split(",").includes(user.name)) groups.add(Number(gid));
  }
  return { pid: null, uid, gid: user.gid, groups: [...groups] };
}

/** Everything `[api.tcp]` names, read and checked; planterd refuses to start on any problem. */
export function loadTcp(cfg: TcpConfig, selfUid: number, peerOf: (uid: number) => Peer = peerOfUid): TcpSetup {
  const { host, port } = parseAddress(cfg.address);
  if (!isLoopback(host) && !cfg.allow_remote)
    throw configError(
      `[api.tcp] address ${cfg.address} is not a loopback address`,
      "listening beyond this host is explicit: set allow_remote = true in [api.tcp] (and keep its identities few)",
    );
  if (!cfg.identities.length)
    throw configError(
      "[api.tcp] names no identities: planterd does not listen on TCP without authentication",
      "add [[api.tcp.identities]] with name, uid and token_file (or cert_cn with client_ca)",
    );
  const names = new Set<string>();
  const identities = cfg.identities.map((i): TcpIdentity => {
    if (names.has(i.name)) throw configError(`[api.tcp] identity ${i.name} is named twice`, "give each its own name");
    names.add(i.name);
    if (i.uid === 0)
      throw configError(
        `[api.tcp] identity ${i.name} has uid 0: root is never an identity over TCP`,
        "name an unprivileged user's uid",
      );
    if (!i.token_file && !i.cert_cn)
      throw configError(`[api.tcp] identity ${i.name} has neither token_file nor cert_cn`, "give it one of them");
    if (i.cert_cn && !cfg.client_ca)
      throw configError(
        `[api.tcp] identity ${i.name} has cert_cn but [api.tcp] has no client_ca`,
        "name the CA that signs client certificates in client_ca",
      );
    return {
      name: i.name,
      peer: peerOf(i.uid),
      tokenHash: i.token_file ? digest(readTokenFile(i.token_file, selfUid)) : null,
      certCn: i.cert_cn ?? null,
    };
  });
  const file = (what: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw configError(`[api.tcp] ${what} ${path}: ${(e as Error).message}`, "name a readable PEM file");
    }
  };
  return {
    host,
    port,
    tls: {
      cert: file("cert", cfg.cert),
      key: file("key", cfg.key),
      ...(cfg.client_ca ? { ca: file("client_ca", cfg.client_ca) } : {}),
      requestCert: Boolean(cfg.client_ca),
      // An unverified certificate is not refused at the handshake (a token may still prove who it
      // is): it only counts when `authorized`.
      rejectUnauthorized: false,
    },
    identities,
  };
}

/** The identity a verified client certificate proves, or null. */
export function certIdentity(socket: TLSSocket, identities: readonly TcpIdentity[]): TcpIdentity | null {
  if (!socket.authorized) return null;
  const cn = socket.getPeerCertificate()?.subject?.CN;
  if (typeof cn !== "string") return null;
  return identities.find((i) => i.certCn !== null && i.certCn === cn) ?? null;
}

/**
 * The identity an `Authorization: Bearer TOKEN` header proves, or null. Every identity's digest
 * is compared, in constant time, whatever matched first.
 */
export function tokenIdentity(header: string | undefined, identities: readonly TcpIdentity[]): TcpIdentity | null {
  const m = /^Bearer ([\x21-\x7e]{1,4096})$/.exec(header ?? "");
  if (!m) return null;
  const d = digest(m[1] as string);
  let found: TcpIdentity | null = null;
  for (const i of identities) if (i.tokenHash && timingSafeEqual(i.tokenHash, d) && !found) found = i;
  return found;
}
