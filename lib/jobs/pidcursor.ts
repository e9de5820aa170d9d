/**
 * The processes created since the last look, without listing the host's: the kernel hands out
 * pids in order (the next free one above the last, wrapping at pid_max), so what is new since
 * the last look lies between the last pid then and the last pid now. /proc lists processes in
 * pid order and a directory offset can start the listing at any pid (`lseek` to pid + 258 in
 * /proc, then `getdents64`), so a look costs the processes created since, not those that exist.
 *
 * Each pid range is listed twice, at two looks in a row: a pid handed out just before a look
 * whose process is attached a moment later (fork is not atomic to readers of /proc) is missed by
 * the first and found by the second. When more tasks were created since the last look than could
 * fit between two passes of the allocator round the pid space (/proc/stat `processes`), the
 * window is unknown and everything is listed once.
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import { openSync, readFileSync, readSync } from "node:fs";
import { listPids } from "./proc.ts";

/** What the cursor reads of the kernel; tests hand in a fake. */
export interface PidSource {
  /** Tasks (processes and threads) created since boot. */
  forks(): number;
  /** The last pid handed out in this pid namespace. */
  lastPid(): number;
  /** One more than the largest pid (`kernel.pid_max`). */
  pidMax(): number;
  /** Live process ids (thread group leaders) from `from` to `to`, ascending. */
  list(from: number, to: number): number[];
}

/** Pids below this are never handed out again once the allocator has wrapped. */
const RESERVED_PIDS = 300;
/** The kernel's own limit on pid_max. */
const PID_MAX_LIMIT = 4 * 1024 * 1024;

/** What one look found: processes not seen at the previous look; `all` when the whole host was listed. */
export interface NewPids {
  pids: number[];
  all: boolean;
}

/** Pids that appeared since the last `next()` (see the module comment). */
export class PidCursor {
  private last = -1;
  private before = -1;
  private forks = 0;
  private recent = new Set<number>();

  constructor(private readonly src: PidSource) {}

  /**
   * Count from now: what exists now is not new, but for processes created after pid `after` (the
   * first look lists from there: a process just spawned may have made children already).
   */
  reset(after?: number): void {
    this.forks = this.src.forks();
    this.last = this.src.lastPid();
    this.before = after ?? this.last;
    this.recent = new Set();
  }

  /** The processes created since the last look (some seen at the look before may come again once). */
  next(): NewPids {
    if (this.last < 0) {
      this.reset();
      return { pids: [], all: false };
    }
    const forks = this.src.forks();
    const last = this.src.lastPid();
    // Without a fork count (a /proc/stat without `processes`), a moved last pid says something was
    // made; a wrap past the whole pid space then goes unseen. Without a last pid, everything is listed.
    const made = forks > 0 ? forks - this.forks : last === this.last ? 0 : 1;
    if (made === 0 && this.before === this.last) return { pids: [], all: false };
    const all = !Number.isFinite(last) || made < 0 || made >= (this.src.pidMax() - RESERVED_PIDS) / 2;
    const listed = all ? this.src.list(1, PID_MAX_LIMIT) : this.window(this.before, last);
    this.before = this.last;
    this.last = last;
    this.forks = forks;
    const pids = listed.filter((p) => !this.recent.has(p));
    this.recent = new Set(listed);
    return { pids, all };
  }

  /** Live pids in the cyclic range (lo, hi]: above lo up to hi, or, wrapped, above lo and from where the allocator restarts up to hi. */
  private window(lo: number, hi: number): number[] {
    if (hi >= lo) return hi === lo ? [] : this.src.list(lo + 1, hi);
    return [...this.src.list(lo + 1, PID_MAX_LIMIT), ...this.src.list(RESERVED_PIDS, hi)];
  }
}

/** Where /proc's pid entries start in its directory offsets (FIRST_PROCESS_ENTRY + 2 in fs/proc/base.c). */
const TGID_OFFSET = 258;

interface Libc {
  open(path: Uint8Array, flags: number): number;
  lseek(fd: number, offset: bigint, whence: number): bigint;
  getdents64(fd: number, buf: Uint8Array | number, size: number): bigint;
}

/** Reads one small /proc file again and again through one descriptor. */
class Kept {
  private fd = -1;
  private readonly buf: Buffer;
  constructor(
    private readonly path: string,
    size: number,
  ) {
    this.buf = Buffer.allocUnsafe(size);
  }
  read(): string {
    if (this.fd < 0) this.fd = openSync(this.path, "r");
    const n = readSync(this.fd, this.buf, 0, this.buf.length, 0);
    return this.buf.toString("latin1", 0, n);
  }
}

/** Lists /proc from a pid on with getdents64 (glibc 2.30+); null where it cannot. */
function directLister(): ((from: number, to: number) => number[]) | null {
  let libc: { symbols: Libc };
  try {
    libc = dlopen("libc.so.6", {
      open: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
      lseek: { args: [FFIType.i32, FFIType.i64, FFIType.i32], returns: FFIType.i64 },
      getdents64: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
    }) as unknown as { symbols: Libc };
  } catch {
    return null;
  }
  // O_RDONLY | O_DIRECTORY | O_CLOEXEC
  const fd = libc.symbols.open(new TextEncoder().encode("/proc\0"), 0o200000 | 0o2000000);
  if (fd < 0) return null;
  const buf = new Uint8Array(32 * 1024);
  const view = new DataView(buf.buffer);
  const at = ptr(buf);
  const list = (from: number, to: number): number[] => {
    const out: number[] = [];
    if (libc.symbols.lseek(fd, BigInt(TGID_OFFSET + from), 0) < 0n) throw new Error("lseek /proc failed");
    for (;;) {
      const n = Number(libc.symbols.getdents64(fd, at, buf.length));
      if (n < 0) throw new Error("getdents64 /proc failed");
      if (n === 0) return out;
      for (let off = 0; off < n; off += view.getUint16(off + 16, true)) {
        // d_name, after d_ino (8), d_off (8), d_reclen (2) and d_type (1).
        const pid = pidNamed(buf, off + 19);
        if (pid < 0) continue;
        if (pid > to) return out;
        if (pid >= from) out.push(pid);
      }
    }
  };
  try {
    // The offset must mean what this module takes it to: a listing from this process starts with it.
    if (list(process.pid, process.pid)[0] === process.pid) return list;
  } catch {
    // fall through to readdir
  }
  return null;
}

/** The pid a NUL-terminated entry name at `i` is, or -1 for a name that is not one (`self`, `stat`, …). */
function pidNamed(buf: Uint8Array, i: number): number {
  let pid = 0;
  for (let c = buf[i] as number; c !== 0; c = buf[++i] as number) {
    if (c < 48 || c > 57) return -1;
    pid = pid * 10 + c - 48;
  }
  return pid;
}

/** A listing by readdir of all of /proc, filtered: the fallback where getdents64 cannot start at a pid. */
function readdirLister(from: number, to: number): number[] {
  return listPids()
    .filter((pid) => pid >= from && pid <= to)
    .sort((a, b) => a - b);
}

/** This host's /proc as a PidSource (Linux only; null elsewhere). */
export function procPidSource(): PidSource | null {
  if (process.platform !== "linux") return null;
  const stat = new Kept("/proc/stat", 16 * 1024);
  const lastPid = new Kept("/proc/sys/kernel/ns_last_pid", 64);
  const loadavg = new Kept("/proc/loadavg", 256);
  let max = 0;
  const list = directLister() ?? readdirLister;
  return {
    forks: () => {
      const processes = /^processes (\d+)$/m;
      // Past the first 16 KiB on a host with many CPUs or interrupts: read it whole.
      const m = processes.exec(stat.read()) ?? processes.exec(readFileSync("/proc/stat", "latin1"));
      return Number(m?.[1] ?? 0);
    },
    lastPid: () => {
      try {
        return Number(lastPid.read().trim());
      } catch {
        // The last field of /proc/loadavg is the same number.
        return Number(loadavg.read().trim().split(" ").pop());
      }
    },
    pidMax: () => {
      if (!max) {
        try {
          max = Number(readFileSync("/proc/sys/kernel/pid_max", "latin1").trim()) || 32768;
        } catch {
          max = 32768;
        }
      }
      return max;
    },
    list,
  };
}
