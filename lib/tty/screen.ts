/**
 * The screen of a job's terminal, kept by a terminal emulator (@xterm/headless): what a
 * controller that attaches is redrawn with, and what `logs --screen` prints.
 *
 * The emulator parses about 25 MB/s of 80-column lines (2 MB/s of very short ones); a job's
 * terminal can carry ten times that. So the output path never waits for it: bytes queue here and
 * are parsed while the output pauses (no new bytes for IDLE_MS) or when a snapshot is asked for. A queue past MAX_PENDING (a flood) drops its
 * oldest bytes and the emulator is reset before it parses the rest: the screen is rebuilt from
 * the newest MAX_PENDING bytes, which for scrolling output is the screen itself; modes set only
 * in the dropped part are lost (counted in `skipped_bytes`). Full-screen programs write far less
 * than that between pauses, and their screen is exact.
 */
import type { SerializeAddon } from "@xterm/addon-serialize";
import type { Terminal } from "@xterm/headless";
import type { Snapshot } from "./protocol.ts";

/**
 * Output kept for the emulator at most; older bytes are dropped under a flood. The emulator's cost
 * is per line as much as per byte (about 3 µs a line: 25 MB/s of 80-column lines, 2 MB/s of
 * `seq`), so this also bounds a snapshot's wait: 512 KiB of short lines parse in about 0.25 s.
 */
export const MAX_PENDING = 512 * 1024;
/**
 * A pause in the output this long lets the emulator catch up, until the output resumes: parsing
 * a whole queue at every stall of a flood kept the holder from reading the terminal meanwhile,
 * which stalled the job again (100 MB through the holder took twice as long under load). A
 * snapshot parses everything.
 */
export const IDLE_MS = 30;

type Item = { data: Uint8Array } | { cols: number; rows: number };

/** A terminal emulator fed lazily from a job's output. */
export class Screen {
  /** Made at the first parse: the emulator's modules load after the job has started. */
  private emulator: { term: Terminal; serializer: SerializeAddon } | null = null;
  private disposed = false;
  private queue: Item[] = [];
  private pendingBytes = 0;
  private skipped = 0;
  private resetFirst = false;
  private idle: Timer | null = null;
  private lastWrite = 0;
  private work: Promise<void> = Promise.resolve();

  constructor(
    private readonly cols: number,
    private readonly rows: number,
  ) {}

  private async load(): Promise<{ term: Terminal; serializer: SerializeAddon }> {
    if (this.emulator) return this.emulator;
    const [{ Terminal }, { SerializeAddon }] = await Promise.all([
      import("@xterm/headless"),
      import("@xterm/addon-serialize"),
    ]);
    const term = new Terminal({ cols: this.cols, rows: this.rows, scrollback: 0, allowProposedApi: true });
    const serializer = new SerializeAddon();
    term.loadAddon(serializer as never);
    this.emulator = { term, serializer };
    return this.emulator;
  }

  /** Output read from the terminal. */
  write(data: Uint8Array): void {
    this.queue.push({ data });
    this.pendingBytes += data.length;
    if (this.pendingBytes > MAX_PENDING) this.trim();
    // One timer per pause, not one per chunk: it looks again until the output has paused.
    this.lastWrite = performance.now();
    if (!this.idle) this.armIdle(IDLE_MS);
  }

  private armIdle(ms: number): void {
    this.idle = setTimeout(() => {
      const quiet = performance.now() - this.lastWrite;
      if (quiet < IDLE_MS) this.armIdle(IDLE_MS - quiet);
      else {
        this.idle = null;
        void this.drain(true).then(() => {
          if (this.queue.length && !this.idle) this.armIdle(IDLE_MS);
        });
      }
    }, ms);
  }

  /** The terminal's new size (in order with the output around it). */
  resize(cols: number, rows: number): void {
    this.queue.push({ cols, rows });
  }

  /** Everything queued parsed, then the screen. */
  async snapshot(): Promise<Snapshot> {
    await this.drain();
    const { term, serializer } = await this.load();
    const buf = term.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < term.rows; y++) lines.push(buf.getLine(buf.viewportY + y)?.translateToString(true) ?? "");
    return {
      cols: term.cols,
      rows: term.rows,
      cursor: { x: buf.cursorX, y: buf.cursorY },
      lines,
      ansi: serializer.serialize({ scrollback: 0 }),
      skipped_bytes: this.skipped,
    };
  }

  dispose(): void {
    this.disposed = true;
    if (this.idle) clearTimeout(this.idle);
    this.emulator?.term.dispose();
  }

  /** Parse what is queued, in order; `whileQuiet`: stop (after a chunk) once new output arrives. */
  private drain(whileQuiet = false): Promise<void> {
    this.work = this.work.then(async () => {
      if (this.disposed) return;
      const { term } = await this.load();
      const mark = this.lastWrite;
      while (this.queue.length && !(whileQuiet && this.lastWrite !== mark)) {
        if (this.resetFirst) {
          this.resetFirst = false;
          term.reset();
        }
        const item = this.queue.shift() as Item;
        if ("data" in item) {
          this.pendingBytes -= item.data.length;
          await new Promise<void>((resolve) => term.write(item.data, resolve));
        } else term.resize(item.cols, item.rows);
      }
    });
    return this.work;
  }

  /** Drop the oldest queued output down to MAX_PENDING (resizes are kept: they are tiny and ordered). */
  private trim(): void {
    let drop = 0;
    const resizes: Item[] = [];
    while (drop < this.queue.length && this.pendingBytes > MAX_PENDING) {
      const item = this.queue[drop++] as Item;
      if ("data" in item) {
        this.pendingBytes -= item.data.length;
        this.skipped += item.data.length;
        this.resetFirst = true;
      } else resizes.push(item);
    }
    this.queue.splice(0, drop, ...resizes);
  }
}

/** The screen a terminal stream leaves (a finished job's log, `logs --screen`). */
export async function renderScreen(data: Uint8Array, cols: number, rows: number): Promise<Snapshot> {
  const s = new Screen(cols, rows);
  s.write(data.length > MAX_PENDING ? data.subarray(data.length - MAX_PENDING) : data);
  const snap = await s.snapshot();
  s.dispose();
  return { ...snap, skipped_bytes: Math.max(0, data.length - MAX_PENDING) };
}

/** The screen a finished terminal job's log leaves (its last MAX_PENDING bytes, rendered at the job's size). */
export async function screenOfLog(path: string, cols: number, rows: number): Promise<Snapshot> {
  const file = Bun.file(path);
  const size = file.size;
  const from = Math.max(0, size - MAX_PENDING);
  const tail = new Uint8Array(await file.slice(from, size).arrayBuffer());
  const snap = await renderScreen(tail, cols, rows);
  return { ...snap, skipped_bytes: from };
}
