/**
 * Whether a standard stream is a terminal, asked of libc's isatty through bun:ffi. Touching
 * `process.stdout` (for `.isTTY`) makes Bun build its Node streams, which costs a compiled
 * planter ~20 ms per command; `node:tty` costs ~8 ms to load. This costs neither.
 */
import { dlopen, FFIType } from "bun:ffi";
import { LIBC } from "../libc.ts";

let isattyOnce: ((fd: number) => number) | null | undefined;

function libcIsatty(): ((fd: number) => number) | null {
  if (isattyOnce !== undefined) return isattyOnce;
  try {
    const { symbols } = dlopen(LIBC, { isatty: { args: [FFIType.i32], returns: FFIType.i32 } });
    isattyOnce = (fd: number) => symbols.isatty(fd) as number;
  } catch {
    isattyOnce = null;
  }
  return isattyOnce;
}

const cache = new Map<number, boolean>();

/** Whether `fd` is a terminal (cached per fd; falls back to Node's answer where libc cannot be loaded). */
export function isTerminal(fd: number): boolean {
  let t = cache.get(fd);
  if (t === undefined) {
    const f = libcIsatty();
    if (f) t = f(fd) === 1;
    else t = Boolean((fd === 1 ? process.stdout : fd === 2 ? process.stderr : process.stdin)?.isTTY);
    cache.set(fd, t);
  }
  return t;
}
