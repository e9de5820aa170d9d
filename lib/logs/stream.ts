/**
 * planterd's side of the log byte streams: read a job's log files from offsets and hand the
 * bytes to a sink as they are written, one bounded chunk at a time, never reading ahead of what
 * the sink has taken (the daemon's memory stays flat however fast the job writes and however
 * slowly the client reads).
 */
import { closeSync, fstatSync, readSync } from "node:fs";
import { fileSize, type GrowthWatch, openLog } from "./read.ts";

export type Stream = "stdout" | "stderr";

/** Bytes read from a log per chunk. */
export const STREAM_CHUNK = 256 * 1024;

/** Where the bytes go: `write` resolves when the sink takes more (after a drain when it was full). */
export interface Sink {
  write(chunk: Uint8Array): Promise<void>;
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
  /** Where a pass bounded to the log's size stops (`bounded`). */
  stop: number;
  bounded: boolean;
  /** The last read filled its chunk: more is likely there, and the next read need not ask the size. */
  full: boolean;
}

/**
 * Open a log for one read (null when it is not there: a job not started, or removed). A stream
 * holds no fd between reads, so the clients a reader stalls or a follower idles cost planterd
 * no descriptors.
 */
function open(file: string): number | null {
  try {
    return openLog(file);
  } catch {
    return null;
  }
}

/** Read the next chunk of a log and pass it on; returns the bytes sent. */
async function step(c: Cursor, o: PumpOptions): Promise<number> {
  const fd = open(c.file);
  if (fd === null) return 0;
  let buf: Buffer;
  let n: number;
  const head = o.header ?? 0;
  try {
    // What is there decides the buffer (a follower woken for a line allocates a line), except in
    // the middle of a flood, where a full chunk is there and asking the size costs a syscall a chunk.
    const end = c.bounded ? c.stop : c.full ? c.at + STREAM_CHUNK : fstatSync(fd).size;
    const want = Math.min(STREAM_CHUNK, end - c.at);
    if (want <= 0) return 0;
    // A buffer of its own for every chunk, never reused: a pool that took a chunk's buffer back
    // once its write callback had run sent bytes of a later chunk in an earlier one's place
    // (Bun's node:http was not done with it; 1 run in 2 of 300 MB to a reader that paused).
    buf = Buffer.allocUnsafe(head + want);
    n = readSync(fd, buf, head, want, c.at);
  } finally {
    closeSync(fd);
  }
  c.full = n === STREAM_CHUNK;
  if (n === 0) return 0;
  o.frame?.(buf, c.stream, n);
  c.at += n;
  await o.sink.write(n + head === buf.length ? buf : buf.subarray(0, head + n));
  return n;
}

/** Bound each cursor to its log's size now. */
function bound(cursors: Cursor[]): void {
  for (const c of cursors) {
    c.stop = fileSize(c.file);
    c.bounded = true;
  }
}

/**
 * Send the logs from their offsets: without follow, up to their sizes now; with follow, as they
 * grow, until the job has ended and every byte is sent. Streams take turns chunk by chunk, so a
 * flood on one does not hold back the other. Returns the offsets reached (on abort, early).
 */
export async function pumpLogs(o: PumpOptions): Promise<Record<Stream, number>> {
  const cursors: Cursor[] = o.logs.map((l) => ({
    stream: l.stream,
    file: l.file,
    at: l.offset,
    stop: 0,
    bounded: false,
    full: false,
  }));
  // Following: one subscription per log and one to the job's end for the stream's whole life,
  // made before the first read so that no growth goes unseen.
  let poked = false;
  let wake: (() => void) | null = null;
  const poke = () => {
    poked = true;
    const w = wake;
    wake = null;
    w?.();
  };
  const offs = o.follow ? [...cursors.map((c) => o.watch.changes(c.file, poke)), o.onEnd(poke)] : [];
  o.signal.addEventListener("abort", poke);
  try {
    if (!o.follow) bound(cursors);
    for (;;) {
      // The job's state before the bytes: once it has ended, every byte it wrote is in the files.
      // The last pass reads what is there now: a process the job left behind that goes on
      // writing to its log (an unsandboxed job's daemon) cannot keep the stream open.
      const last = !o.follow || o.ended();
      if (last && o.follow) bound(cursors);
      poked = false;
      if (!(await drain(cursors, o))) return reached(cursors);
      if (last || o.signal.aborted) return reached(cursors);
      if (!poked) await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    o.signal.removeEventListener("abort", poke);
    for (const off of offs) off();
  }
}

/** Send from the logs in turns, a chunk each, until none has more now; false when aborted meanwhile. */
async function drain(cursors: Cursor[], o: PumpOptions): Promise<boolean> {
  for (;;) {
    let sent = 0;
    for (const c of cursors) {
      if (o.signal.aborted) return false;
      sent += await step(c, o);
    }
    if (sent === 0) return true;
  }
}

function reached(cursors: Cursor[]): Record<Stream, number> {
  const r = { stdout: 0, stderr: 0 };
  for (const c of cursors) r[c.stream] = c.at;
  return r;
}
