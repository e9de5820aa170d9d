/** Chunked reads of job log files, and waiting for them to grow (inotify, with a polling fallback). */
import {
  closeSync,
  constants,
  type FSWatcher,
  fstatSync,
  ftruncateSync,
  lstatSync,
  openSync,
  readSync,
  watch,
} from "node:fs";

/**
 * Open a job's log for reading, as planterd does every time (JSON chunks, byte streams, the
 * descriptor it passes): read-only, close-on-exec (as Bun opens every file), never through a symlink, never waiting, and
 * only a regular file. A log replaced by a symlink would have planterd read (and pass) what it
 * points to; by a FIFO, an open without O_NONBLOCK blocks planterd's one thread until a writer
 * comes (every request and the limits monitor with it). Throws ENOENT, ELOOP, or EINVAL for a
 * log that is not a regular file.
 */
export function openLog(file: string): number {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  let regular = false;
  try {
    regular = fstatSync(fd).isFile();
  } finally {
    if (!regular) closeSync(fd);
  }
  if (!regular) {
    const e = new Error(`${file} is not a regular file`) as NodeJS.ErrnoException;
    e.code = "EINVAL";
    throw e;
  }
  return fd;
}

/**
 * Cut a job's log to `length` bytes (its quota, the disk's reserve), as openLog opens it: never
 * through a symlink (which would cut what it points to), never waiting on a FIFO. Throws as openLog.
 */
export function truncateLog(file: string, length: number): void {
  const fd = openSync(file, constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!fstatSync(fd).isFile()) {
      const e = new Error(`${file} is not a regular file`) as NodeJS.ErrnoException;
      e.code = "EINVAL";
      throw e;
    }
    ftruncateSync(fd, length);
  } finally {
    closeSync(fd);
  }
}

/** Bytes of `file` from `offset`, at most `max`; `size` is the file's size at the read. */
export function readChunk(file: string, offset: number, max: number): { data: Buffer; size: number } {
  let fd: number;
  try {
    fd = openLog(file);
  } catch {
    return { data: Buffer.alloc(0), size: 0 };
  }
  try {
    const size = fstatSync(fd).size;
    const len = Math.max(0, Math.min(max, size - offset));
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = readSync(fd, buf, got, len - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    return { data: buf.subarray(0, got), size };
  } finally {
    closeSync(fd);
  }
}

/** Current size of a log file, 0 when it does not exist or is no regular file (never through a symlink). */
export function fileSize(file: string): number {
  try {
    const st = lstatSync(file);
    return st.isFile() ? st.size : 0;
  } catch {
    return 0;
  }
}

/**
 * One inotify watcher per followed file, shared by every waiting request, closed when the
 * last waiter leaves. Where fs.watch is unavailable, waiters poll.
 */
export class GrowthWatch {
  private readonly files = new Map<
    string,
    { watcher: FSWatcher | null; waiters: Set<() => void>; poll: Timer | null }
  >();

  constructor(private readonly pollMs: number) {}

  /** Call `wake` once `file` is larger than `size` (checked at once, then on every change); returns a disposer. */
  wait(file: string, size: number, wake: () => void): () => void {
    const check = () => {
      if (fileSize(file) > size) wake();
    };
    const off = this.changes(file, check);
    // The file may have grown between the read and the watch.
    queueMicrotask(check);
    return off;
  }

  /**
   * Call `onChange` on every change of `file` the kernel reports (every poll where it cannot)
   * until disposed: a byte stream following a log keeps one subscription for its whole life
   * rather than a watch made and closed at every wait.
   */
  changes(file: string, onChange: () => void): () => void {
    let entry = this.files.get(file);
    if (!entry) {
      const fresh = { watcher: null as FSWatcher | null, waiters: new Set<() => void>(), poll: null as Timer | null };
      const notify = () => {
        for (const w of [...fresh.waiters]) w();
      };
      try {
        fresh.watcher = watch(file, notify);
        fresh.watcher.on("error", () => undefined);
      } catch {
        fresh.poll = setInterval(notify, this.pollMs);
      }
      this.files.set(file, fresh);
      entry = fresh;
    }
    const e = entry;
    // A function of its own per subscription: the same callback twice is two subscriptions.
    const waiter = () => onChange();
    e.waiters.add(waiter);
    let disposed = false;
    return () => {
      // Idempotent: a second call must not close or unmap a newer entry for the same file.
      if (disposed) return;
      disposed = true;
      e.waiters.delete(waiter);
      if (e.waiters.size === 0) {
        e.watcher?.close();
        if (e.poll) clearInterval(e.poll);
        if (this.files.get(file) === e) this.files.delete(file);
      }
    };
  }
}
