/**
 * A file handed over a Unix socket (SCM_RIGHTS), Linux only: planterd sends a job's log file as a
 * read-only descriptor with the head of its answer to `GET /v1/jobs/{id}/logs/fd`, and the CLI
 * copies it to its output with sendfile(2), at the speed of the disk and with no byte through
 * planterd (docs/api.md "Logs as a file").
 *
 * Both ends go through bun:ffi because neither Bun's sockets nor node:net pass descriptors: the
 * server writes its head with sendmsg(2) on the connection's fd (nothing else was written on it,
 * and nothing is after: planterd closes it), and the client makes the whole request on a blocking
 * socket of its own, bounded by SO_RCVTIMEO/SO_SNDTIMEO, so that no event loop reads a byte
 * (a descriptor read by a plain read(2) is dropped by the kernel).
 *
 * Layouts are those of 64-bit Linux (x86_64, arm64): struct msghdr 56 bytes, struct cmsghdr
 * 16 bytes before its data, struct timeval two longs.
 */
import { closeSync, fstatSync, readSync, writeSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { getSystemErrorMessage } from "node:util";
import { notAccepting, unreadBytes } from "./accepted.ts";
import { EXIT, PlanterError } from "./errors.ts";
import { parseHead } from "./stream.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const EINTR = 4;
const EAGAIN = 11;
const POLLOUT = 4;
/** Room for this many descriptors in one answer: more than planterd ever sends; the rest are closed. */
const MAX_FDS = 8;
/** How long planterd may take to answer once it has read the request. */
const ANSWER_MS = 30_000;
/** The most of an answer kept: a head and an error's JSON are far smaller. */
const MAX_ANSWER = 1024 * 1024;

type Sym = (...a: unknown[]) => number | bigint;
interface Libc {
  socket: Sym;
  connect: Sym;
  setsockopt: Sym;
  send: Sym;
  sendmsg: Sym;
  recvmsg: Sym;
  close: Sym;
  sendfile: Sym;
  poll: Sym;
  __errno_location: Sym;
}

/** libc through bun:ffi, loaded once. */
interface Loaded {
  sym: Libc;
  ptr: (b: ArrayBufferView) => number;
  errno: () => number;
}
let libc: Loaded | null = null;

async function load(): Promise<Loaded> {
  if (libc) return libc;
  const { dlopen, FFIType: T, ptr, read } = await import("bun:ffi");
  const lib = dlopen("libc.so.6", {
    socket: { args: [T.i32, T.i32, T.i32], returns: T.i32 },
    connect: { args: [T.i32, T.ptr, T.u32], returns: T.i32 },
    setsockopt: { args: [T.i32, T.i32, T.i32, T.ptr, T.u32], returns: T.i32 },
    send: { args: [T.i32, T.ptr, T.u64, T.i32], returns: T.i64 },
    sendmsg: { args: [T.i32, T.ptr, T.i32], returns: T.i64 },
    recvmsg: { args: [T.i32, T.ptr, T.i32], returns: T.i64 },
    close: { args: [T.i32], returns: T.i32 },
    sendfile: { args: [T.i32, T.i32, T.ptr, T.u64], returns: T.i64 },
    poll: { args: [T.ptr, T.u64, T.i32], returns: T.i32 },
    __errno_location: { args: [], returns: T.ptr },
  });
  const sym = lib.symbols as unknown as Libc;
  libc = {
    sym,
    ptr: (b) => ptr(b as Uint8Array) as unknown as number,
    errno: () => read.i32(sym.__errno_location() as never, 0),
  };
  return libc;
}

/** errno numbers by name (ENOSPC, EPIPE, …), as the OS numbers them. */
let errnoNames: Map<number, string> | null = null;

/** An Error with the errno's name as its code and its text, as node's are (`ENOSPC: no space left on device, sendfile`). */
function errnoError(what: string, errno: number): NodeJS.ErrnoException {
  errnoNames ??= new Map(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));
  const code = errnoNames.get(errno) ?? `errno ${errno}`;
  const text = (() => {
    try {
      return getSystemErrorMessage(-errno);
    } catch {
      return "";
    }
  })();
  const e = new Error(`${code}${text ? `: ${text.toLowerCase()}` : ""}, ${what}`) as NodeJS.ErrnoException;
  e.code = code;
  e.errno = errno;
  e.syscall = what;
  return e;
}

/** A struct msghdr over one iovec (`data`) and a control buffer. */
function msghdr(c: Loaded, data: Uint8Array, control: Uint8Array) {
  const iov = new Uint8Array(16);
  const iv = new DataView(iov.buffer);
  iv.setBigUint64(0, BigInt(data.length ? c.ptr(data) : 0), true);
  iv.setBigUint64(8, BigInt(data.length), true);
  const msg = new Uint8Array(56);
  const m = new DataView(msg.buffer);
  m.setBigUint64(16, BigInt(c.ptr(iov)), true);
  m.setBigUint64(24, 1n, true);
  if (control.length) {
    m.setBigUint64(32, BigInt(c.ptr(control)), true);
    m.setBigUint64(40, BigInt(control.length), true);
  }
  return { msg, iov, m };
}

/**
 * planterd's side, loaded once: a function that writes `head` on the connection `sock` with `fd`
 * attached (SCM_RIGHTS), synchronously (the caller reads the connection's fd, opens the file and
 * passes it in one turn of the event loop). The socket is planterd's non-blocking one with nothing
 * queued on it, so a head of a few hundred bytes goes whole or not at all. The function returns
 * null, or why it could not.
 */
export async function loadFdPass(): Promise<(sock: number, head: Uint8Array, fd: number) => string | null> {
  const c = await load();
  return (sock, head, fd) => {
    const control = new Uint8Array(24);
    const cv = new DataView(control.buffer);
    cv.setBigUint64(0, 20n, true); // CMSG_LEN(sizeof(int))
    cv.setInt32(8, SOL_SOCKET, true);
    cv.setInt32(12, SCM_RIGHTS, true);
    cv.setInt32(16, fd, true);
    const { msg } = msghdr(c, head, control);
    for (;;) {
      const n = Number(c.sym.sendmsg(sock, c.ptr(msg), MSG_NOSIGNAL));
      if (n === head.length) return null;
      if (n >= 0) return `only ${n} of the answer's ${head.length} bytes were taken`;
      const errno = c.errno();
      if (errno !== EINTR) return errnoError("sendmsg", errno).message;
    }
  };
}

/** An answer read on a connection of its own: status, headers (lower-case), body, descriptors passed. */
export interface FdAnswer {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  fds: number[];
}

/**
 * The client's side: connect to `socketPath`, call `verify` with the connected socket (the
 * listener's uid: lib/api/trust.ts) before a byte is sent, send `request` (a whole HTTP/1.1
 * request with `Connection: close`) and read the answer to its end, with every descriptor that
 * came with it (close-on-exec). Each send and each read is bounded by `timeoutMs`.
 * Connection failures throw node-style errors (`code` ENOENT, ECONNREFUSED, …).
 */
export async function requestWithFds(
  socketPath: string,
  request: string,
  verify: (fd: number) => void,
  timeoutMs: number,
): Promise<FdAnswer> {
  const c = await load();
  const s = c.sym.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (s < 0) throw errnoError("socket", c.errno());
  const fds: number[] = [];
  try {
    const tv = new BigInt64Array([BigInt(Math.floor(timeoutMs / 1000)), BigInt((timeoutMs % 1000) * 1000)]);
    c.sym.setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, c.ptr(tv), 16);
    c.sym.setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, c.ptr(tv), 16);
    connectTo(c, s, socketPath);
    verify(s);
    sendAll(c, s, new TextEncoder().encode(request), socketPath, timeoutMs);
    const answer = parseAnswer(await readAll(c, s, socketPath, timeoutMs, fds));
    const out = { ...answer, fds: [...fds] };
    fds.length = 0;
    return out;
  } finally {
    c.sym.close(s);
    for (const fd of fds) closeSync(fd);
  }
}

/** Connect `s` to `socketPath` (a path too long for an address is ENAMETOOLONG). */
function connectTo(c: Loaded, s: number, socketPath: string): void {
  const path = new TextEncoder().encode(socketPath);
  if (path.length >= 108) throw errnoError("connect", 36 /* ENAMETOOLONG */);
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(path, 2);
  for (;;) {
    if (c.sym.connect(s, c.ptr(addr), 2 + path.length + 1) === 0) return;
    const errno = c.errno();
    if (errno !== EINTR) throw errnoError("connect", errno === EAGAIN ? 111 : errno);
  }
}

/** Send `req` whole; a listener that takes none of it within the timeout is notAccepting. */
function sendAll(c: Loaded, s: number, req: Uint8Array, socketPath: string, timeoutMs: number): void {
  for (let at = 0; at < req.length; ) {
    const part = req.subarray(at);
    const n = Number(c.sym.send(s, c.ptr(part), part.length, MSG_NOSIGNAL));
    if (n >= 0) {
      at += n;
      continue;
    }
    const errno = c.errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) throw notAccepting(socketPath, timeoutMs);
    throw errnoError("send", errno);
  }
}

/**
 * Read the answer to its end, the descriptors that came with it into `fds`. A wait past
 * `timeoutMs` is planterd's to explain: one that has not read the request is stopped or hung (or
 * no planterd: notAccepting); one that has is given ANSWER_MS in all.
 */
async function readAll(c: Loaded, s: number, socketPath: string, timeoutMs: number, fds: number[]): Promise<Buffer> {
  const answerBy = Date.now() + Math.max(timeoutMs, ANSWER_MS);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(64 * 1024);
  const control = new Uint8Array(16 + 8 * Math.ceil((4 * MAX_FDS) / 8));
  for (;;) {
    control.fill(0);
    const { msg, m } = msghdr(c, buf, control);
    const n = Number(c.sym.recvmsg(s, c.ptr(msg), MSG_CMSG_CLOEXEC));
    if (n < 0) {
      await waitedTooLong(c.errno(), s, socketPath, timeoutMs, answerBy);
      continue;
    }
    fds.push(...received(control, Number(m.getBigUint64(40, true))));
    if (n === 0) return Buffer.concat(chunks);
    if (total + n > MAX_ANSWER) throw new Error(`planterd's answer is larger than ${MAX_ANSWER} bytes`);
    chunks.push(buf.slice(0, n));
    total += n;
  }
}

/** After a failed read: return to read again (EINTR, a timeout within the answer's time), else throw why. */
async function waitedTooLong(errno: number, s: number, socketPath: string, timeoutMs: number, answerBy: number) {
  if (errno === EINTR) return;
  if (errno !== EAGAIN) throw errnoError("recvmsg", errno);
  const unread = await unreadBytes(s);
  if (unread === null || unread > 0) throw notAccepting(socketPath, timeoutMs);
  if (Date.now() <= answerBy) return;
  throw new PlanterError(
    "E_UNAVAILABLE",
    `planterd at ${socketPath} read the request but did not answer in ${ANSWER_MS / 1000} s`,
    { hint: "run `planter doctor`; planterd may be overloaded or hung" },
  ).withExit(EXIT.unreachable);
}

/** An HTTP/1.1 answer's status, headers (lower-case) and body. */
function parseAnswer(all: Buffer): Omit<FdAnswer, "fds"> {
  const end = all.indexOf("\r\n\r\n");
  if (end < 0) throw errnoError("recvmsg", 104);
  return { ...parseHead(all.subarray(0, end).toString("latin1")), body: new Uint8Array(all.subarray(end + 4)) };
}

/** The descriptors of the SCM_RIGHTS messages in a control buffer `used` bytes long. */
function received(control: Uint8Array, used: number): number[] {
  const v = new DataView(control.buffer, control.byteOffset, control.byteLength);
  const out: number[] = [];
  for (let at = 0; at + 16 <= used; ) {
    const len = Number(v.getBigUint64(at, true));
    if (len < 16) break;
    if (v.getInt32(at + 8, true) === SOL_SOCKET && v.getInt32(at + 12, true) === SCM_RIGHTS) {
      for (let p = at + 16; p + 4 <= at + len && p + 4 <= used; p += 4) out.push(v.getInt32(p, true));
    }
    at += 8 * Math.ceil(len / 8);
  }
  return out;
}

/**
 * Copy bytes `from` … `to` of the regular file `fd` to `out` (the CLI's stdout): sendfile(2), the
 * kernel moving pages without a copy through this process; where `out` takes no sendfile (some
 * terminals, an O_APPEND file on older kernels), reads and writes. Waits while a non-blocking
 * `out` is full. Returns the offset reached (short of `to` when the file ended first).
 */
export async function copyFile(fd: number, out: number, from: number, to: number): Promise<number> {
  if (!fstatSync(fd).isFile()) throw new Error("the descriptor planterd passed is not a regular file");
  const c = await load();
  const off = new BigInt64Array([BigInt(from)]);
  const pfd = new Int32Array([out, POLLOUT]); // struct pollfd: fd, events (revents above them)
  let at = from;
  while (at < to) {
    const n = Number(c.sym.sendfile(out, fd, c.ptr(off), Math.min(to - at, 1 << 30)));
    if (n > 0) {
      at += n;
      continue;
    }
    if (n === 0) return at;
    const errno = c.errno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) {
      c.sym.poll(c.ptr(pfd), 1, 1000);
      continue;
    }
    if (at > from) throw errnoError("sendfile", errno);
    return copyByReads(fd, out, at, to);
  }
  return at;
}

async function copyByReads(fd: number, out: number, from: number, to: number): Promise<number> {
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let at = from;
  while (at < to) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, to - at), at);
    if (n === 0) break;
    for (let w = 0; w < n; ) {
      try {
        w += writeSync(out, buf, w, n - w);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        await Bun.sleep(1);
      }
    }
    at += n;
  }
  return at;
}
