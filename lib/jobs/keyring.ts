/**
 * A fresh kernel session keyring before each job starts (Linux): a job inherits its session
 * keyring, and possessing root's (or the user's login) keyring would let it read those keys.
 * planterd joins a new anonymous one, so the next job starts with an empty keyring of its own.
 */
import { dlopen, FFIType } from "bun:ffi";

/** keyctl(2) numbers per architecture; KEYCTL_JOIN_SESSION_KEYRING = 1. */
const KEYCTL: Record<string, bigint> = { x64: 250n, arm64: 219n };

let syscall: ((n: bigint, a: bigint, b: bigint) => bigint) | null | undefined;

/** Join a new anonymous session keyring; returns its serial, or null where this is not possible. */
export function freshSessionKeyring(): number | null {
  const nr = KEYCTL[process.arch];
  if (process.platform !== "linux" || nr === undefined) return null;
  if (syscall === undefined) {
    try {
      const lib = dlopen("libc.so.6", {
        syscall: { args: [FFIType.i64, FFIType.i64, FFIType.i64], returns: FFIType.i64 },
      });
      syscall = lib.symbols.syscall as unknown as typeof syscall;
    } catch {
      syscall = null;
    }
  }
  if (!syscall) return null;
  const r = Number(syscall(nr, 1n, 0n));
  return r > 0 ? r : null;
}
