/** Chunked reads of job log files, and waiting for them to grow (inotify, with a polling fallback). */
import { closeSync, type FSWatcher, fstatSync, openSync, readSync, statSync, watch } from "node:fs";

/** Bytes of `file` from `offset`, at most `max`; `size` is the file's size at the read. */
export function readChunk(file: string, offset: number, max: number): { data: Buffer; size: number } {
  let fd: number;
  try {
    fd = openSync(file, "r");
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

/** Current size of a file, 0 when it does not exist. */
export function fileSize(file: string): number {
  try {
    return statSync(file).size;
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
