/**
 * The few libc calls the holder needs beside Bun.Terminal, through bun:ffi.
 *
 * Bun.spawn({terminal}) makes its child a session leader with the PTY as its controlling
 * terminal. A sandboxed job runs in a session of its own further down (bwrap --new-session), and
 * inside a user namespace it cannot take a terminal that another session holds (TIOCSCTTY needs
 * CAP_SYS_ADMIN of the host to steal it). So the holder makes a `Bun.Terminal`, finds the slave's
 * fd among the descriptors that appeared, and passes that fd to a plain spawn: no session outside
 * the job ever holds the PTY, and the job's `setsid -c` makes it its own controlling terminal.
 * The holder's own copy of the slave is then replaced by /dev/null (dup2, so Bun's later close
 * finds a valid fd), so the master reads EOF exactly when the last process of the job lets go.
 */
import { readdirSync } from "node:fs";
import { LIBC } from "../libc.ts";

type Libc = {
  ttyname: (fd: number) => string | null;
  dup2: (from: number, to: number) => number;
};

let libc: Libc | null = null;

function load(): Libc {
  if (libc) return libc;
  const { dlopen, FFIType, CString } = require("bun:ffi") as typeof import("bun:ffi");
  const { symbols } = dlopen(LIBC, {
    ttyname: { args: [FFIType.i32], returns: FFIType.ptr },
    dup2: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  });
  libc = {
    ttyname: (fd) => {
      const p = symbols.ttyname(fd);
      return p ? new CString(p).toString() : null;
    },
    dup2: (from, to) => symbols.dup2(from, to) as number,
  };
  return libc;
}

/** The open descriptors of this process. */
export function openFds(): Set<number> {
  const dir = process.platform === "linux" ? "/proc/self/fd" : "/dev/fd";
  return new Set(readdirSync(dir).map(Number).filter(Number.isInteger));
}

/** Whether a terminal device name is a PTY slave (Linux /dev/pts/N, macOS /dev/ttysNNN). */
export const isSlaveName = (name: string) => /^\/dev\/pts\/\d+$/.test(name) || /^\/dev\/ttys\d+$/.test(name);

/** The PTY slave among `fds` (the descriptors a new Bun.Terminal opened), with its device name. */
export function findSlave(fds: Iterable<number>): { fd: number; name: string } {
  const c = load();
  for (const fd of fds) {
    const name = c.ttyname(fd);
    if (name && isSlaveName(name)) return { fd, name };
  }
  throw new Error("the new terminal's slave side was not found among its descriptors");
}

/** Point `fd` at `target`'s file (the holder's slave copy at /dev/null). */
export function redirectFd(target: number, fd: number): void {
  if (load().dup2(target, fd) !== fd) throw new Error(`dup2 onto fd ${fd} failed`);
}
