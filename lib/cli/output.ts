/** Output for people (tables, colours when a terminal wants them) and for scripts (JSON). */
import type { Job } from "../api/contract.ts";
import { isTerminal } from "./tty.ts";

let colorOnce: boolean | undefined;
/** Colours only on a terminal that wants them. */
const colorOn = () => (colorOnce ??= isTerminal(1) && !process.env.NO_COLOR && process.env.TERM !== "dumb");
const paint = (code: number) => (s: string) => (colorOn() ? `\x1b[${code}m${s}\x1b[0m` : s);
export const dim = paint(2);
export const red = paint(31);
export const green = paint(32);
export const yellow = paint(33);

/**
 * The CLI's own output goes through `write` (Bun's native stdout and stderr, in order per
 * stream), never through `process.stdout`/`process.stderr`: building those Node streams costs a
 * compiled planter ~20 ms per command. Code that needs a Node stream asks `nodeStream`, so that
 * `exitAfterOutput` knows to wait for it too.
 */
type Fd = 1 | 2;
const chains: Record<Fd, Promise<void>> = { 1: Promise.resolve(), 2: Promise.resolve() };
const gone: Record<Fd, boolean> = { 1: false, 2: false };
const nodeUsed: Record<Fd, boolean> = { 1: false, 2: false };
const goneListeners = new Set<(fd: Fd, error: unknown) => void>();
/** A stream that could not be written for another reason than its reader's leaving (a full disk). */
const failed: Record<Fd, NodeJS.ErrnoException | null> = { 1: null, 2: null };

/**
 * Whether a write's error says the stream's reader has gone (`| head` done, a terminal hung up, a
 * closed fd): then writing stops quietly, as cat's would. Any other error (ENOSPC, EDQUOT, EFBIG,
 * EIO of a disk) means output was lost: the command fails (exitAfterOutput).
 */
export function readerGone(fd: Fd, e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code === "EPIPE" || code === "ECONNRESET" || code === "ENOTCONN" || code === "EBADF") return true;
  return code === "EIO" && isTerminal(fd);
}

/**
 * Stop writing to `fd` after `e`: quietly when its reader has gone, else remembered as a failure
 * the command ends with; `onOutputGone` listeners hear of it either way, once.
 */
export function outputFailed(fd: Fd, e: unknown): void {
  if (!readerGone(fd, e)) failed[fd] ??= e as NodeJS.ErrnoException;
  if (gone[fd]) return;
  gone[fd] = true;
  for (const l of goneListeners) l(fd, e);
}

/**
 * Write `data` to stdout (1) or stderr (2) after everything written there before; settles when
 * the OS has it. A reader that has gone (EPIPE, a closed fd) ends writing to that stream quietly;
 * any other error (a full disk) ends it too and the command fails at its end (exitAfterOutput).
 * `onOutputGone` listeners hear of either once.
 */
export function write(fd: Fd, data: string | Uint8Array): Promise<void> {
  const sink = fd === 1 ? Bun.stdout : Bun.stderr;
  const next = chains[fd].then(async () => {
    if (gone[fd] || data.length === 0) return;
    try {
      await Bun.write(sink, data);
    } catch (e) {
      outputFailed(fd, e);
    }
  });
  chains[fd] = next;
  return next;
}

/** A line on stdout. */
export const print = (line: string) => write(1, `${line}\n`);

/** Hear when a stream's reader has gone (the run command sends its job SIGHUP then). */
export function onOutputGone(listener: (fd: Fd, error: unknown) => void): () => void {
  goneListeners.add(listener);
  return () => goneListeners.delete(listener);
}

/** Node's stream for stdout or stderr, for code that needs one (waited for at exit). */
export function nodeStream(fd: Fd): NodeJS.WriteStream {
  nodeUsed[fd] = true;
  return fd === 1 ? process.stdout : process.stderr;
}

/** Print a value as indented JSON on stdout. */
export function printJson(value: unknown): Promise<void> {
  return write(1, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * End `stream` and wait until every byte written to it has reached the OS, or the reader has
 * gone (EPIPE). Bun writes to pipes asynchronously: `write()` may return before the bytes left,
 * and neither its callback nor `writableLength` says when they did; only "finish" does.
 */
export function finished(
  stream: NodeJS.WritableStream & { writableFinished?: boolean; destroyed?: boolean; errored?: unknown },
) {
  return new Promise<void>((resolve) => {
    // A reader that went away before now left the stream errored: nothing more will come.
    if (stream.writableFinished || stream.destroyed || stream.errored) return resolve();
    // After an error (the reader closed the pipe) neither "finish" nor "close" comes.
    stream.once("error", () => resolve());
    stream.once("close", () => resolve());
    stream.once("finish", () => resolve());
    stream.end();
  });
}

/**
 * The one way a command ends: stdout and stderr are delivered whole (to a slow pipe too), then
 * the process exits with `code`. `process.exit` alone drops what Bun has not yet written. Output
 * that could not be written (not a reader gone: a full disk) fails a command that succeeded
 * otherwise (exit 1, and why on stderr): short output never passes for whole.
 */
export async function exitAfterOutput(code: number): Promise<never> {
  await Promise.all([
    chains[1],
    chains[2],
    nodeUsed[1] ? finished(process.stdout) : undefined,
    nodeUsed[2] ? finished(process.stderr) : undefined,
  ]);
  const lost = failed[1] ?? failed[2];
  if (lost) {
    if (!failed[2]) await write(2, `planter: ${outputError(failed[1] ? 1 : 2, lost).message}\n`);
    process.exit(code === 0 ? 1 : code);
  }
  process.exit(code);
}

/** The error of output that could not be written: which stream, and the system's word for why. */
export function outputError(fd: Fd, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  const why =
    err?.code && !String(err.message).startsWith(err.code) ? `${err.code}: ${err.message}` : String(err?.message ?? e);
  return new Error(`cannot write to ${fd === 1 ? "stdout" : "stderr"}: ${why}`);
}

const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
// C0 and C1 controls, DEL, and the Unicode controls that reorder or hide text (bidi overrides
// and isolates, marks, zero-width joiners aside): a terminal acts on them or shows a lie.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g;

/**
 * Text that planterd (or anyone on the other end of the socket) sent, made safe to print for
 * people: every control character becomes a visible escape (`\x1b`, `\n`, `\u202e`), so an
 * error, a name, an argv or a message can neither drive the terminal nor forge output lines.
 * The one function for server-provided text in human output; `--json` output stays exact.
 */
export function printable(text: unknown): string {
  return String(text).replace(CONTROL, (c) => {
    const named = NAMED[c];
    if (named) return named;
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** A plain text table: a header row and left-aligned columns, each cell `printable`. */
export function table(header: string[], cells: string[][]): string {
  const rows = cells.map((r) => r.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** "3s", "5m", "2h", "4d" since an ISO time. */
export function age(iso: string | null, now = Date.now()): string {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** How a job stands, in a few words: "running", "exited 0", "killed (TERM)". */
export function outcome(j: Job): string {
  switch (j.state) {
    case "exited":
      return `exited ${j.exit_code}`;
    case "failed":
      if (j.reason === "exited") return j.exit_code !== null ? `failed ${j.exit_code}` : `failed (SIG${j.signal})`;
      return `failed: ${j.reason}`;
    case "killed":
      return `killed: ${j.reason}${j.signal ? ` (SIG${j.signal})` : ""}`;
    default:
      return j.state;
  }
}

/**
 * A command line for display, quoting what needs it as a shell would read it back: an argument
 * with control characters in ANSI-C quotes (`$'a\x1bb'`), so none reaches the terminal raw.
 */
export function shellLine(argv: string[]): string {
  return argv
    .map((a) => {
      if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a)) return a;
      CONTROL.lastIndex = 0;
      if (CONTROL.test(a)) return `$'${printable(a.replaceAll("\\", "\\\\").replaceAll("'", "\\'"))}'`;
      return `'${a.replaceAll("'", `'\\''`)}'`;
    })
    .join(" ");
}
