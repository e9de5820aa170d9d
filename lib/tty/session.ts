/**
 * `planter tty-session PROGRAM [ARGS…]` (hidden): what util-linux `setsid --ctty` does, for hosts
 * that have no setsid(1) (macOS). This process — a child of the job's recorder, which is no
 * process group leader — starts a session of its own (setsid), takes the PTY on its stdin as the
 * session's controlling terminal (TIOCSCTTY: the PTY is no other session's, the holder never lets
 * a session take it), and becomes PROGRAM (execve): nothing of planter stays in the job's tree.
 * Job control, ^C as SIGINT to the job's foreground group and /dev/tty then work as on Linux.
 *
 * It runs outside the sandbox, in front of the backend's own argv (`sandbox-exec … PROGRAM`):
 * Seatbelt keeps the session and the terminal it was given. A bwrap job takes its terminal inside
 * its sandbox instead (bwrap --new-session leaves the job none; util-linux setsid there).
 */
import { existsSync } from "node:fs";
import { LIBC } from "../libc.ts";
import { selfArgv } from "../self.ts";

/** TIOCSCTTY: Linux's number, and macOS's _IO('t', 97). */
const TIOCSCTTY = process.platform === "darwin" ? 0x20007461 : 0x540e;

interface Libc {
  setsid: () => number;
  ioctl: (fd: number, request: number | bigint, arg: number) => number;
  execve: (path: unknown, argv: unknown, envp: unknown) => number;
}

function libc(): { symbols: Libc; ptr: (b: ArrayBufferView) => number } {
  const { dlopen, FFIType, ptr } = require("bun:ffi") as typeof import("bun:ffi");
  const { symbols } = dlopen(LIBC, {
    setsid: { args: [], returns: FFIType.i32 },
    // Variadic in C; the third argument is unused by TIOCSCTTY on macOS and 0 ("do not steal") on Linux.
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    execve: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  });
  return { symbols: symbols as unknown as Libc, ptr: (b) => ptr(b as Uint8Array) as number };
}

/** A NULL-terminated array of C strings; the buffers are returned too, to be kept alive. */
function cStrings(list: string[], ptr: (b: ArrayBufferView) => number): { array: BigUint64Array; keep: Buffer[] } {
  const keep = list.map((s) => Buffer.from(`${s}\0`));
  const array = new BigUint64Array(keep.length + 1);
  keep.forEach((b, i) => {
    array[i] = BigInt(ptr(b));
  });
  return { array, keep };
}

const fail = (message: string): never => {
  process.stderr.write(`planter tty-session: ${message}\n`);
  // As a shell answers for a program it cannot run.
  process.exit(126);
};

/** The entry: argv is PROGRAM [ARGS…]. Never returns: it becomes PROGRAM or exits 126/127. */
export function ttySessionMain(argv: string[]): never {
  const [program] = argv;
  if (!program) return fail("usage: planter tty-session PROGRAM [ARGS…]");
  const path = program.includes("/") ? program : Bun.which(program);
  if (!path || !existsSync(path)) {
    process.stderr.write(`planter tty-session: ${program}: not found\n`);
    process.exit(127);
  }
  const { symbols, ptr } = libc();
  if (symbols.setsid() < 0) return fail("cannot start a session (this process leads a process group)");
  if (symbols.ioctl(0, TIOCSCTTY, 0) < 0) return fail("stdin is not a terminal this session can take");
  const args = cStrings(argv, ptr);
  const env = cStrings(
    Object.entries(process.env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`])),
    ptr,
  );
  const file = Buffer.from(`${path}\0`);
  symbols.execve(ptr(file), ptr(args.array), ptr(env.array));
  // Only reached when execve failed; the buffers were alive through the call.
  void [args.keep, env.keep];
  return fail(`cannot run ${path}`);
}

/**
 * What a terminal job's argv starts with, by where it is taken: inside a bwrap sandbox util-linux
 * setsid (the job's own session there); elsewhere this entry, outside the sandbox, in front of the
 * backend's argv. `PLANTER_TTY_SESSION=builtin` picks the entry on Linux too (tests).
 */
export function sessionArgv(): string[] {
  return selfArgv("tty-session");
}

/** Whether terminal jobs outside bwrap take their session through this entry rather than setsid(1). */
export function builtinSession(env: Record<string, string | undefined> = process.env): boolean {
  return process.platform === "darwin" || env.PLANTER_TTY_SESSION === "builtin" || !existsSync("/usr/bin/setsid");
}
