/**
 * Whether planterd reads what the client sends. A listener that accepts nothing — a stopped
 * (SIGSTOP) or hung planterd, a socket unit whose service keeps failing, anything else bound there
 * — still completes a Unix-socket connect (the kernel queues it), so a request would wait for ever.
 * The client bounds that wait, not the request: a healthy planterd reads a request at once, however
 * long its answer then takes (a wait, a follow, a job over a large tree).
 *
 * On Linux the bytes a peer has not read yet are the sender's queue (`SIOCOUTQ` on the socket):
 * read at once means accepted. The listener check (one per client, lib/api/client.ts) writes an
 * empty line once the listener's uid is trusted and watches it; a stream that is a client's first
 * request (`planter run`) is watched on its own connection, its body held until the head was read.
 * Elsewhere (macOS) the queue cannot be asked and there is no bound.
 */
import { EXIT, PlanterError } from "./errors.ts";

/** How long planterd may take to read a request, in ms (`PLANTER_ACCEPT_TIMEOUT_MS`, default 10 s). */
export function acceptTimeoutMs(env: Record<string, string | undefined> = process.env): number {
  const v = Number(env.PLANTER_ACCEPT_TIMEOUT_MS);
  return Number.isInteger(v) && v > 0 ? v : 10_000;
}

/** The error of a listener that read nothing within `ms`. */
export function notAccepting(socketPath: string, ms: number): PlanterError {
  return new PlanterError(
    "E_UNAVAILABLE",
    `planterd at ${socketPath} took the connection but read nothing in ${ms / 1000} s: it is stopped or hung, or what listens there is not planterd`,
    {
      hint: "run `planter doctor`; if planterd is stopped (kill -CONT) or hung, restart it (`planter daemon`, or its service); set PLANTER_SOCKET or --socket if it listens elsewhere",
      details: { socket: socketPath, waited_ms: ms },
    },
  ).withExit(EXIT.unreachable);
}

/** TIOCOUTQ = SIOCOUTQ (asm-generic; the same on x86 and arm). */
const SIOCOUTQ = 0x5411;
let ioctl: ((fd: number, request: number, out: Int32Array) => number) | null | undefined;

/** Bytes written on a connected Unix socket that its peer has not read yet; null where unknown. */
export async function unreadBytes(fd: number): Promise<number | null> {
  if (process.platform !== "linux" || fd < 0) return null;
  if (ioctl === undefined) {
    try {
      const { dlopen, FFIType } = await import("bun:ffi");
      const lib = dlopen("libc.so.6", {
        ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
      });
      ioctl = lib.symbols.ioctl as unknown as typeof ioctl;
    } catch {
      ioctl = null;
    }
  }
  if (!ioctl) return null;
  const out = new Int32Array(1);
  return ioctl(fd, SIOCOUTQ, out) === 0 ? (out[0] as number) : null;
}

/**
 * Resolve once the peer has read what was written on `fd` (or `done()` says an answer came, or
 * the connection ended), reject with `notAccepting` after `ms`. Resolves at once where the queue
 * cannot be read (the caller has no bound then).
 */
export async function whenRead(fd: number, socketPath: string, ms: number, done: () => boolean): Promise<void> {
  const start = performance.now();
  for (let pause = 1; ; pause = Math.min(pause * 2, 50)) {
    if (done()) return;
    const n = await unreadBytes(fd);
    if (n === null || n === 0) return;
    if (performance.now() - start >= ms) throw notAccepting(socketPath, ms);
    await Bun.sleep(pause);
  }
}
