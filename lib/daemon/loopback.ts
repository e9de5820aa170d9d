/**
 * The uid of a loopback TCP peer, as the kernel records it: the owner of the client's socket, asked
 * of NETLINK_SOCK_DIAG by the connection's two ends (one exact lookup, as `ss -e` does; unprivileged).
 * A TCP peer sends no credentials, but on this host's loopback its socket is in planterd's own
 * network namespace, and the kernel says whose it is. Used for connection slots only, never for
 * authorization: a token or certificate still says who a request is. (/proc/net/tcp holds the same
 * field, but reading it walks the whole hash table: 17 ms per read on a host with 46 sockets.)
 */
import { dlopen, ptr, FFIType as T } from "bun:ffi";
import { isIP } from "node:net";

/** The ends of an accepted TCP connection, as node:net gives them (planterd's side is `local`). */
export interface TcpEnds {
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
}

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  sendto(fd: number, buf: unknown, len: number, flags: number, addr: unknown, addrlen: number): number | bigint;
  recv(fd: number, buf: unknown, len: number, flags: number): number | bigint;
  close(fd: number): number;
}
let lib: Libc | null | undefined;
function libc(): Libc | null {
  if (lib !== undefined) return lib;
  try {
    lib =
      process.platform === "linux"
        ? (dlopen("libc.so.6", {
            socket: { args: [T.i32, T.i32, T.i32], returns: T.i32 },
            sendto: { args: [T.i32, T.ptr, T.u64, T.i32, T.ptr, T.u32], returns: T.i64 },
            recv: { args: [T.i32, T.ptr, T.u64, T.i32], returns: T.i64 },
            close: { args: [T.i32], returns: T.i32 },
          }).symbols as unknown as Libc)
        : null;
  } catch {
    lib = null;
  }
  return lib;
}

/** An address as the 4 or 16 bytes of its family (an IPv4-mapped IPv6 address as its IPv4); null if neither. */
export function addressBytes(address: string): { family: 2 | 10; bytes: number[] } | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const v4 = mapped ? (mapped[1] as string) : address;
  if (isIP(v4) === 4) return { family: 2, bytes: v4.split(".").map(Number) };
  if (isIP(address) !== 6 || address.includes("%")) return null;
  const [head = "", tail] = address.split("::");
  const words = (s: string) => (s ? s.split(":").map((h) => Number.parseInt(h, 16)) : []);
  const h = words(head);
  const t = tail === undefined ? [] : words(tail);
  const all = [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
  return { family: 10, bytes: all.flatMap((w) => [(w >> 8) & 0xff, w & 0xff]) };
}

const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const IPPROTO_TCP = 6;
const MSG_DONTWAIT = 0x40;
const TCP_TIME_WAIT = 6;
const TCP_LISTEN = 10;

/**
 * The sock_diag request for the client's socket of `ends` (pure): nlmsghdr, then inet_diag_req_v2
 * whose id is the client's end as source and planterd's as destination; any state, no cookie.
 */
export function diagRequest(ends: Required<TcpEnds>): Buffer | null {
  const client = addressBytes(ends.remoteAddress);
  const server = addressBytes(ends.localAddress);
  if (!client || !server || client.family !== server.family) return null;
  const req = Buffer.alloc(72);
  req.writeUInt32LE(72, 0);
  req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
  req.writeUInt16LE(NLM_F_REQUEST, 6);
  req.writeUInt32LE(1, 8);
  req[16] = client.family;
  req[17] = IPPROTO_TCP;
  req.writeUInt32LE(0xffffffff, 20); // every state: the lookup is exact anyway
  req.writeUInt16BE(ends.remotePort, 24);
  req.writeUInt16BE(ends.localPort, 26);
  Buffer.from(client.bytes).copy(req, 28);
  Buffer.from(server.bytes).copy(req, 44);
  req.writeUInt32LE(0xffffffff, 64); // INET_DIAG_NOCOOKIE
  req.writeUInt32LE(0xffffffff, 68);
  return req;
}

/**
 * The uid owning the client end of a loopback connection planterd accepted, or null when it cannot
 * be told (not this host's, already gone, no sock_diag). A connection in TIME_WAIT has no owner
 * any more (the kernel says uid 0 there): null, never root.
 */
export function loopbackPeerUid(ends: TcpEnds): number | null {
  const { localAddress, localPort, remoteAddress, remotePort } = ends;
  if (!localAddress || !remoteAddress || !localPort || !remotePort) return null;
  const req = diagRequest({ localAddress, localPort, remoteAddress, remotePort });
  const c = libc();
  if (!req || !c) return null;
  const fd = c.socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return null;
  try {
    const kernel = Buffer.alloc(12);
    kernel.writeUInt16LE(AF_NETLINK, 0);
    if (Number(c.sendto(fd, ptr(req), req.length, 0, ptr(kernel), kernel.length)) !== req.length) return null;
    // The kernel answers within the send: nothing to wait for.
    const out = Buffer.alloc(1024);
    const n = Number(c.recv(fd, ptr(out), out.length, MSG_DONTWAIT));
    return diagUid(out.subarray(0, Math.max(0, n)));
  } finally {
    c.close(fd);
  }
}

/** The uid in a sock_diag answer (pure): an inet_diag_msg of a live, connected socket, else null. */
export function diagUid(answer: Buffer): number | null {
  // nlmsghdr (16) + inet_diag_msg: family, state, timer, retrans, id (48), expires, rqueue, wqueue, uid.
  if (answer.length < 84 || answer.readUInt16LE(4) !== SOCK_DIAG_BY_FAMILY) return null;
  const state = answer[17] as number;
  if (state === TCP_TIME_WAIT || state === TCP_LISTEN) return null;
  return answer.readUInt32LE(80);
}
