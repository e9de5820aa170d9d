/**
 * planterd's side of the log byte streams: read a job's log files from offsets and hand the
 * bytes to a sink as they are written, one bounded chunk at a time, never reading ahead of what
 * the sink has taken (the daemon's memory stays flat however fast the job writes and however
 * slowly the client reads).
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { GrowthWatch } from "./read.ts";

export type Stream = "stdout" | "stderr";

/** Bytes read from a log per chunk. */
export const STREAM_CHUNK = 256 * 1024;

/**
 * Chunk buffers, shared by every stream of the daemon: a buffer goes back once the sink is done
 * with it (its write callback), so a stream at full speed reuses one or two buffers instead of
 * allocating (and faulting in) 256 KiB per chunk. An idle follower holds none.
 */
const pool: Buffer[] = [];
const POOL_KEEP = 8;
function take(size: number): Buffer {
  const b = pool.pop();
  return b && b.length === size ? b : Buffer.allocUnsafe(size);
}
function giveBack(b: Buffer): void {
  if (pool.length < POOL_KEEP) pool.push(b);
}

/**
 * Where the bytes go. `write` resolves when the sink takes more (after a drain when it was
 * full); `done` is called once the sink no longer needs `chunk`'s memory.
 */
export interface Sink {
  write(chunk: Uint8Array, done?: () => void): Promise<void>;
}

export interface PumpOptions {
  /** The logs to read, each from its offset. */
  logs: { stream: Stream; file: string; offset: number }[];
  /** Keep going until the job has ended and every byte is sent; else stop at each log's size at the start. */
  follow: boolean;
  /** Whether the job has ended (read before the bytes: once it has, every byte it wrote is in the files). */
  ended: () => boolean;
  /** Call `wake` when the job ends; returns a disposer. */
  onEnd: (wake: () => void) => () => void;
  watch: GrowthWatch;
  /** Bytes kept free before each chunk's data (a frame header), filled by `frame`. */
  header?: number;
  frame?: (buf: Buffer, stream: Stream, length: number) => void;
  sink: Sink;
  signal: AbortSignal;
}

interface Cursor {
  stream: Stream;
  file: string;
  at: number;
  /** Where the last pass stops: the log's size when the stream began (no follow) or when the job had ended. */
  stop: number;
  fd: number | null;
}

function open(c: Cursor): number | null {
  if (c.fd === null) {
    try {
      c.fd = openSync(c.file, "r");
    } catch {
      return null; // not there yet (a job not started) or removed: nothing to read
    }
  }
  return c.fd;
}

/** Read the next chunk of a log into a pooled buffer and pass it on; returns the bytes sent. */
async function step(c: Cursor, o: PumpOptions, bounded: boolean): Promise<number> {
  const fd = open(c);
  if (fd === null) return 0;
  const want = bounded ? Math.min(STREAM_CHUNK, c.stop - c.at) : STREAM_CHUNK;
  if (want <= 0) return 0;
  const head = o.header ?? 0;
  const buf = take(head + STREAM_CHUNK);
  let n: number;
  try {
    n = readSync(fd, buf, head, want, c.at);
  } catch (e) {
    giveBack(buf);
    throw e;
  }
  if (n === 0) {
    giveBack(buf);
    return 0;
  }
  o.frame?.(buf, c.stream, n);
  c.at += n;
  await o.sink.write(buf.subarray(0, head + n), () => giveBack(buf));
  return n;
}

/** Wait until a log grows past its cursor, the job ends, or the stream is aborted. */
function growth(cursors: Cursor[], o: PumpOptions): Promise<void> {
  return new Promise<void>((resolve) => {
    const offs: (() => void)[] = [];
    let done = false;
    const wake = () => {
      if (done) return;
      done = true;
      for (const off of offs) off();
      o.signal.removeEventListener("abort", wake);
      resolve();
    };
    o.signal.addEventListener("abort", wake, { once: true });
    offs.push(o.onEnd(wake));
    for (const c of cursors) offs.push(o.watch.wait(c.file, c.at, wake));
    // The job may have ended between the last look and the watches.
    if (o.signal.aborted || o.ended()) wake();
  });
}

/**
 * Send the logs from their offsets: without follow, up to their sizes now; with follow, as they
 * grow, until the job has ended and every byte is sent. Streams take turns chunk by chunk, so a
 * flood on one does not hold back the other. Returns the offsets reached (on abort, early).
 */
export async function pumpLogs(o: PumpOptions): Promise<Record<Stream, number>> {
  const cursors: Cursor[] = o.logs.map((l) => ({ stream: l.stream, file: l.file, at: l.offset, stop: 0, fd: null }));
  try {
    for (;;) {
      const last = !o.follow || o.ended();
      // The last pass reads what is there now: a process the job left behind that goes on
      // writing to its log (an unsandboxed job's daemon) cannot keep the stream open.
      if (last) {
        for (const c of cursors) {
          const fd = open(c);
          c.stop = fd === null ? 0 : fstatSync(fd).size;
        }
      }
      for (;;) {
        let sent = 0;
        for (const c of cursors) {
          if (o.signal.aborted) return reached(cursors);
          sent += await step(c, o, last);
        }
        if (sent === 0) break;
      }
      if (last || o.signal.aborted) return reached(cursors);
      await growth(cursors, o);
    }
  } finally {
    for (const c of cursors) if (c.fd !== null) closeSync(c.fd);
  }
}

function reached(cursors: Cursor[]): Record<Stream, number> {
  const r = { stdout: 0, stderr: 0 };
  for (const c of cursors) r[c.stream] = c.at;
  return r;
}
