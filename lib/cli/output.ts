/** Output for people (tables, colours when a terminal wants them) and for scripts (JSON). */
import type { Job } from "../api/contract.ts";

const color = process.stdout.isTTY && !process.env.NO_COLOR && process.env.TERM !== "dumb";
const paint = (code: number) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
export const dim = paint(2);
export const red = paint(31);
export const green = paint(32);
export const yellow = paint(33);

/** Print a value as indented JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * End `stream` and wait until every byte written to it has reached the OS, or the reader has
 * gone (EPIPE). Bun writes to pipes asynchronously: `write()` may return before the bytes left,
 * and neither its callback nor `writableLength` says when they did; only "finish" does.
 */
export function finished(stream: NodeJS.WritableStream & { writableFinished?: boolean; destroyed?: boolean }) {
  return new Promise<void>((resolve) => {
    if (stream.writableFinished || stream.destroyed) return resolve();
    // After an error (the reader closed the pipe) neither "finish" nor "close" comes.
    stream.once("error", () => resolve());
    stream.once("close", () => resolve());
    stream.once("finish", () => resolve());
    stream.end();
  });
}

/**
 * The one way a command ends: stdout and stderr are delivered whole (to a slow pipe too), then
 * the process exits with `code`. `process.exit` alone drops what Bun has not yet written.
 */
export async function exitAfterOutput(code: number): Promise<never> {
  await Promise.all([finished(process.stdout), finished(process.stderr)]);
  process.exit(code);
}

/** A plain text table: a header row and left-aligned columns. */
export function table(header: string[], rows: string[][]): string {
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

/** A command line for display, quoting what needs it. */
export function shellLine(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(" ");
}
