/**
 * A job's stdin without a terminal (#14: `planter run -i`, `stdin: true` in POST /v1/jobs): a FIFO
 * `stdin` in the job's dir. planterd makes it (and `stdin.ctl`) before the spawn and hands it,
 * open read-write, to the recorder as its fd 0; the recorder gives the job a read-only descriptor
 * and a keeper the write side (lib/jobs/recorder.ts). So the pipe outlives planterd: a restarted
 * planterd opens the FIFO again for each write, and the job never reads an end of input it was
 * not sent.
 *
 * A write never blocks planterd: the FIFO is opened non-blocking, and while the pipe is full
 * (the job does not read) the rest waits on a timer, at most the request's `wait_ms`; what was
 * written by then is said (`StdinFull`). Writes to one job go one after another, so the bytes of
 * each request stay together. The end of input: the mark `stdin.closed` (kept: later writes are
 * refused, after a restart too), then a line on `stdin.ctl` that sends the keeper away.
 *
 * The job holds only its read side; the paths stay in planter's state dir, which no sandbox
 * shows. Reopening its fd 0 through /proc reaches the same pipe and nothing else (and fails for a
 * job that runs as another user than planterd: the FIFO is planterd's, mode 0600).
 */

import { dlopen, FFIType } from "bun:ffi";
import { closeSync, constants, existsSync, fstatSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { storageFault } from "../state/storage.ts";
import { mkfifo } from "./recorder.ts";

/** The stdin files of a job dir. */
export const stdinFiles = (dir: string) => ({
  /** The FIFO the job reads. */
  pipe: join(dir, "stdin"),
  /** The FIFO whose first line ends the job's input (read by the recorder's keeper). */
  ctl: join(dir, "stdin.ctl"),
  /** Made when the job's input was ended: later writes are refused. */
  closed: join(dir, "stdin.closed"),
});

/** The pipe's capacity asked for (Linux F_SETPIPE_SZ): fewer waits for a job that reads in bursts. */
const PIPE_BYTES = 1 << 20;
const F_SETPIPE_SZ = 1031;

let fcntl: ((fd: number, cmd: number, arg: number) => number) | null | undefined;

/** Ask for a pipe of PIPE_BYTES (Linux); the kernel's default (64 KiB) stays where it refuses. */
function growPipe(fd: number): void {
  if (fcntl === undefined) {
    try {
      fcntl =
        process.platform === "linux"
          ? (dlopen("libc.so.6", { fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 } })
              .symbols.fcntl as (fd: number, cmd: number, arg: number) => number)
          : null;
    } catch {
      fcntl = null;
    }
  }
  fcntl?.(fd, F_SETPIPE_SZ, PIPE_BYTES);
}

/**
 * Make the FIFOs of a job with stdin in `dir` and open its pipe read-write: the fd is the
 * recorder's fd 0 (the caller closes its copy after the spawn).
 */
export function prepareStdin(dir: string): number {
  const f = stdinFiles(dir);
  mkfifo(f.pipe);
  mkfifo(f.ctl);
  // Read-write: a FIFO opened so never waits for a partner (Linux, macOS).
  const fd = openSync(f.pipe, constants.O_RDWR | constants.O_NOFOLLOW);
  growPipe(fd);
  return fd;
}

/**
 * Inputs this planterd ended where the state disk had no room for the mark (a full disk with no
 * inode left): known here until the mark can be made (the next `closeStdin` of the job tries again).
 */
const endedUnmarked = new Set<string>();

/** Whether the job's input was ended (`stdin.closed`, or ended while the disk had no room for it). */
export const stdinClosed = (dir: string) => endedUnmarked.has(dir) || existsSync(stdinFiles(dir).closed);

/** Why a write did not put all of its bytes into the job's pipe. */
export type StdinStop = "full" | "closed" | "gone";

/** A write that stopped early: `written` bytes of it are in the pipe. */
export class StdinStopped extends Error {
  constructor(
    readonly why: StdinStop,
    readonly written: number,
  ) {
    super(why);
  }
}

/** Longest wait between two tries of a full pipe. */
const MAX_BACKOFF_MS = 50;

/**
 * Write `data` into the job's pipe, waiting while it is full until `deadline` (ms since the
 * epoch) or `signal`. Resolves with the bytes written (all of them); rejects with StdinStopped
 * (the pipe stayed full, the input was ended, or nobody reads it any more: the job has ended).
 */
export async function writeStdin(dir: string, data: Uint8Array, deadline: number, signal?: AbortSignal) {
  const f = stdinFiles(dir);
  if (stdinClosed(dir)) throw new StdinStopped("closed", 0);
  let fd: number;
  try {
    // Non-blocking: an open for writing fails at once (ENXIO) when nobody holds the pipe open.
    fd = openSync(f.pipe, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENXIO" || code === "ENOENT") throw new StdinStopped("gone", 0);
    throw e;
  }
  let written = 0;
  try {
    if (!fstatSync(fd).isFIFO()) throw new Error(`${f.pipe} is not a pipe`);
    let backoff = 1;
    while (written < data.length) {
      try {
        written += writeSync(fd, data, written, data.length - written);
        backoff = 1;
        continue;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EPIPE") throw new StdinStopped("gone", written);
        if (code !== "EAGAIN") throw e;
      }
      if (signal?.aborted || Date.now() >= deadline) throw new StdinStopped("full", written);
      await Bun.sleep(Math.min(backoff, Math.max(0, deadline - Date.now())));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
    return written;
  } finally {
    closeSync(fd);
  }
}

/**
 * End the job's input: the mark, then the keeper's line. False when it was ended before. The
 * job reads what is still in the pipe, then the end (once no write of planterd's holds it open).
 * A state disk with no room even for the empty mark does not keep the input open: the keeper's
 * line ends it, and this planterd remembers it (`endedUnmarked`); only where neither can be done
 * (no room, and the keeper not reading its line yet) does the disk's error reach the caller.
 */
export function closeStdin(dir: string): boolean {
  const f = stdinFiles(dir);
  let marked = true;
  try {
    writeFileSync(f.closed, "", { flag: "wx", mode: 0o600 });
    endedUnmarked.delete(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    if (storageFault(e) !== "full") throw e;
    if (endedUnmarked.has(dir)) return false;
    marked = false;
  }
  let fd = -1;
  try {
    fd = openSync(f.ctl, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    writeSync(fd, "\n");
  } catch (e) {
    // No reader: the recorder has not opened it yet (its keeper sees the mark) or has ended.
    if ((e as NodeJS.ErrnoException).code !== "ENXIO") throw e;
    if (!marked) throw Object.assign(new Error("no room for the stdin.closed mark"), { code: "ENOSPC" });
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  if (!marked) endedUnmarked.add(dir);
  return true;
}

/**
 * One job's writes one after another: each request's bytes go into the pipe together, and an
 * end of input comes after the writes sent before it.
 */
export class StdinQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(id, tail);
    void tail.then(() => {
      if (this.tails.get(id) === tail) this.tails.delete(id);
    });
    return next;
  }
}
