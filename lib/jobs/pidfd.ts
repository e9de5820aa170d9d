/**
 * Process exits without polling (Linux 5.3+): a pidfd per process, waited on by one worker thread
 * blocked in poll(2), which posts each exit to planterd's loop. Bun tells planterd when its own
 * children exit; a job re-adopted after a restart has a recorder that is not planterd's child, and
 * this is how its end is noticed at once instead of by a poll every `jobs.adopt_poll_ms`.
 *
 * The set of pidfds is shared with the worker through a SharedArrayBuffer (a sequence counter
 * around each change) and an eventfd wakes its poll when the set changes; the worker posts the
 * token of each process that exited and skips it until planterd drops it from the set.
 */
import { dlopen, FFIType } from "bun:ffi";
import { closeSync, writeSync } from "node:fs";
import { startTime } from "./proc.ts";

/** Processes watched at once at most (a job beyond it is polled). */
export const WATCH_CAPACITY = 16 * 1024;

// Layout of the shared array: [0] sequence (odd while planterd writes), [1] count, [2] stop,
// [3] the wake eventfd, then (fd, token) pairs.
const HEAD = 4;

/** The worker: a loop blocked in poll(2), no event loop of its own. */
const WORKER = `
const { dlopen, FFIType, ptr } = require("bun:ffi");
const { workerData } = require("worker_threads");
const shared = new Int32Array(workerData);
const libc = dlopen("libc.so.6", {
  poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  read: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
}).symbols;
const drain = new BigUint64Array(1);
let reported = new Set();
for (;;) {
  let seq, list;
  do {
    seq = Atomics.load(shared, 0);
    const n = Atomics.load(shared, 1);
    list = Array.from(shared.subarray(${HEAD}, ${HEAD} + 2 * n));
  } while (seq % 2 === 1 || seq !== Atomics.load(shared, 0));
  if (Atomics.load(shared, 2)) break;
  const wake = Atomics.load(shared, 3);
  const live = new Set();
  const fds = [wake];
  const tokens = [0];
  for (let i = 0; i < list.length; i += 2) {
    live.add(list[i + 1]);
    if (reported.has(list[i + 1])) continue;
    fds.push(list[i]);
    tokens.push(list[i + 1]);
  }
  for (const t of reported) if (!live.has(t)) reported.delete(t);
  const pfd = new Int32Array(fds.length * 2);
  for (let i = 0; i < fds.length; i++) {
    pfd[2 * i] = fds[i];
    pfd[2 * i + 1] = 1; // POLLIN
  }
  if (libc.poll(ptr(pfd), fds.length, -1) <= 0) continue;
  const exited = [];
  for (let i = 0; i < fds.length; i++) {
    if ((pfd[2 * i + 1] >>> 16) === 0) continue;
    if (i === 0) libc.read(wake, ptr(drain), 8);
    else {
      reported.add(tokens[i]);
      exited.push(tokens[i]);
    }
  }
  if (exited.length) postMessage(exited);
}
`;

interface Libc {
  pidfd_open?: (pid: number, flags: number) => number;
  syscall: (nr: number, pid: number, flags: number) => number;
  eventfd: (init: number, flags: number) => number;
}

const SYS_PIDFD_OPEN = 434; // the same number on every architecture (the unified syscall table)

function libc(): Libc | null {
  const base = {
    syscall: { args: [FFIType.i64, FFIType.i32, FFIType.u32], returns: FFIType.i32 },
    eventfd: { args: [FFIType.u32, FFIType.i32], returns: FFIType.i32 },
  } as const;
  try {
    const lib = dlopen("libc.so.6", {
      ...base,
      pidfd_open: { args: [FFIType.i32, FFIType.u32], returns: FFIType.i32 },
    });
    return lib.symbols as unknown as Libc;
  } catch {
    try {
      // glibc before 2.36 has no pidfd_open wrapper.
      return dlopen("libc.so.6", base).symbols as unknown as Libc;
    } catch {
      return null;
    }
  }
}

interface Watch {
  fd: number;
  pid: number;
  onExit: () => void;
}

/** Calls back when watched processes exit (see the module comment). */
export class ExitWatch {
  private readonly shared = new Int32Array(new SharedArrayBuffer(4 * (HEAD + 2 * WATCH_CAPACITY)));
  private readonly watches = new Map<number, Watch>();
  private readonly byPid = new Map<number, number>();
  private worker: Worker | null = null;
  private nextToken = 1;
  private closed = false;

  private constructor(
    private readonly lib: Libc,
    private readonly wake: number,
  ) {
    Atomics.store(this.shared, 3, wake);
  }

  /** An ExitWatch where this kernel gives pidfds (null elsewhere: the caller polls). */
  static create(): ExitWatch | null {
    if (process.platform !== "linux") return null;
    const lib = libc();
    if (!lib) return null;
    // EFD_CLOEXEC | EFD_NONBLOCK
    const wake = lib.eventfd(0, 0o2000000 | 0o4000);
    if (wake < 0) return null;
    const w = new ExitWatch(lib, wake);
    // The kernel must know pidfd_open (5.3+): try it on planterd itself.
    const probe = w.open(process.pid);
    if (probe < 0) {
      closeSync(wake);
      return null;
    }
    closeSync(probe);
    return w;
  }

  /** Processes watched. */
  get size(): number {
    return this.watches.size;
  }

  private open(pid: number): number {
    const fd = this.lib.pidfd_open ? this.lib.pidfd_open(pid, 0) : this.lib.syscall(SYS_PIDFD_OPEN, pid, 0);
    return fd;
  }

  /**
   * Call `onExit` once when process `pid` (started at `start`) exits. False when it cannot be
   * watched: gone already (or its pid is another process's now), or the watch is full.
   */
  watch(pid: number, start: string | null, onExit: () => void): boolean {
    if (this.closed || this.byPid.has(pid) || this.watches.size >= WATCH_CAPACITY) return false;
    const fd = this.open(pid);
    if (fd < 0) return false;
    // The pidfd names whatever held the pid when it was opened: that must be the process meant.
    if (start !== null && startTime(pid) !== start) {
      closeSync(fd);
      return false;
    }
    const token = this.nextToken++;
    this.watches.set(token, { fd, pid, onExit });
    this.byPid.set(pid, token);
    this.publish();
    return true;
  }

  /** Stop watching process `pid`. */
  unwatch(pid: number): void {
    const token = this.byPid.get(pid);
    if (token === undefined) return;
    this.drop(token);
    this.publish();
  }

  /** Stop every watch and the worker. */
  close(): void {
    if (this.closed) return;
    for (const token of [...this.watches.keys()]) this.drop(token);
    Atomics.store(this.shared, 2, 1);
    this.kick();
    this.closed = true;
    this.worker?.terminate();
    this.worker = null;
    closeSync(this.wake);
  }

  private drop(token: number): void {
    const w = this.watches.get(token);
    if (!w) return;
    this.watches.delete(token);
    this.byPid.delete(w.pid);
    closeSync(w.fd);
  }

  /** Write the set for the worker (as a sequence-counted update) and wake it. */
  private publish(): void {
    const s = this.shared;
    Atomics.add(s, 0, 1);
    let i = HEAD;
    for (const [token, w] of this.watches) {
      Atomics.store(s, i++, w.fd);
      Atomics.store(s, i++, token);
    }
    Atomics.store(s, 1, this.watches.size);
    Atomics.add(s, 0, 1);
    if (!this.worker && this.watches.size) this.start();
    this.kick();
  }

  private start(): void {
    const url = URL.createObjectURL(new Blob([WORKER], { type: "application/javascript" }));
    const worker = new Worker(url, { workerData: this.shared.buffer } as WorkerOptions);
    worker.onmessage = (e: MessageEvent<number[]>) => {
      for (const token of e.data) {
        const w = this.watches.get(token);
        if (!w) continue;
        this.drop(token);
        this.publish();
        try {
          w.onExit();
        } catch (err) {
          console.error(`planterd: after process ${w.pid} exited: ${(err as Error).message}`);
        }
      }
    };
    worker.unref();
    this.worker = worker;
  }

  private kick(): void {
    if (this.closed) return;
    try {
      writeSync(this.wake, new BigUint64Array([1n]));
    } catch {
      // the counter is full: the worker is awake anyway
    }
  }
}
