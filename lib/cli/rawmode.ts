/**
 * The caller's terminal for an interactive job: raw mode, its size, and putting it back. Through
 * libc (bun:ffi): tcgetattr/cfmakeraw/tcsetattr and TIOCGWINSZ, synchronous, so the restore can
 * run in an exit handler; the saved settings are restored byte for byte, whatever they were.
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import { LIBC } from "../libc.ts";

/** Larger than struct termios on Linux (60 bytes) and macOS (72). */
const TERMIOS_BYTES = 256;
const TCSANOW = 0;
/** TCSAFLUSH: a restore also drops input typed meanwhile, as a shell's own raw-mode exit does. */
const TCSAFLUSH = 2;
const TIOCGWINSZ: Record<string, number> = { linux: 0x5413, darwin: 0x40087468 };

type Libc = {
  tcgetattr: (fd: number, t: Uint8Array) => number;
  tcsetattr: (fd: number, when: number, t: Uint8Array) => number;
  cfmakeraw: (t: Uint8Array) => void;
  winsize: (fd: number) => { cols: number; rows: number } | null;
};

let libc: Libc | null = null;

function load(): Libc {
  if (libc) return libc;
  const { symbols: s } = dlopen(LIBC, {
    tcgetattr: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    tcsetattr: { args: [FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    cfmakeraw: { args: [FFIType.ptr], returns: FFIType.void },
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  });
  const ws = new Uint16Array(4);
  libc = {
    tcgetattr: (fd, t) => s.tcgetattr(fd, ptr(t)) as number,
    tcsetattr: (fd, when, t) => s.tcsetattr(fd, when, ptr(t)) as number,
    cfmakeraw: (t) => s.cfmakeraw(ptr(t)),
    winsize: (fd) => {
      const req = TIOCGWINSZ[process.platform];
      if (req === undefined || s.ioctl(fd, req, ptr(ws)) !== 0) return null;
      const rows = ws[0] as number;
      const cols = ws[1] as number;
      return cols > 0 && rows > 0 ? { cols, rows } : null;
    },
  };
  return libc;
}

/** The size of the terminal on `fd`, or null when it is none (or reports 0×0). */
export function windowSize(fd: number): { cols: number; rows: number } | null {
  return load().winsize(fd);
}

/**
 * Raw mode on the terminal `fd` until `restore()` (idempotent). Restored too when the process
 * exits by any path JavaScript sees (exit, uncaught error, a signal handled by the caller):
 * `restore` is registered on `exit`. Throws when `fd` is not a terminal.
 */
export function rawMode(fd: number): { restore: () => void } {
  const c = load();
  const saved = new Uint8Array(TERMIOS_BYTES);
  if (c.tcgetattr(fd, saved) !== 0) throw new Error(`fd ${fd} is not a terminal`);
  const raw = saved.slice();
  c.cfmakeraw(raw);
  if (c.tcsetattr(fd, TCSANOW, raw) !== 0) throw new Error(`cannot put fd ${fd} in raw mode`);
  let done = false;
  const restore = () => {
    if (done) return;
    done = true;
    process.off("exit", restore);
    c.tcsetattr(fd, TCSAFLUSH, saved);
  };
  process.on("exit", restore);
  return { restore };
}
