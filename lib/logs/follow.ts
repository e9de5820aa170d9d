/** Client side of logs: read or follow a stream from an offset, and find the offset of the last N lines. */
import type { Client } from "../api/client.ts";
import { write as writeFd } from "../cli/output.ts";
import { TerminalFilter } from "../cli/terminal.ts";
import { isTerminal } from "../cli/tty.ts";

export type Stream = "stdout" | "stderr";

/** Write a buffer to a stream, waiting for it to drain. */
export function writeOut(out: NodeJS.WritableStream, data: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    if (out.write(data)) resolve();
    else out.once("drain", () => resolve());
  });
}

/**
 * Where a job's bytes go on stdout (1) or stderr (2): through a TerminalFilter when it is a
 * terminal and `raw` was not asked for, byte for byte otherwise (pipes and files get exactly what
 * the job wrote).
 */
export function jobOutput(fd: 1 | 2, raw: boolean) {
  const filter = raw || !isTerminal(fd) ? null : new TerminalFilter();
  const write = (d: Uint8Array) => (d.length ? writeFd(fd, d) : Promise.resolve());
  return {
    write: (d: Uint8Array) => write(filter ? filter.push(d) : d),
    /** What the filter still holds at the end of the stream. */
    end: () => (filter ? write(filter.end()) : Promise.resolve()),
  };
}

/**
 * Copy a job's log from `offset` to `write`. With `follow`, keep going until the job has ended
 * and every byte is read; without, stop at the current end. Returns the next offset.
 */
export async function copyLog(
  client: Client,
  id: string,
  stream: Stream,
  offset: number,
  write: (data: Uint8Array) => Promise<void>,
  opts: { follow: boolean; signal?: AbortSignal; waitMs?: number },
): Promise<number> {
  let at = offset;
  for (;;) {
    const c = await client.logs(
      id,
      {
        stream,
        offset: at,
        follow: opts.follow ? 1 : undefined,
        wait_ms: opts.follow ? (opts.waitMs ?? 30_000) : undefined,
      },
      opts.signal,
    );
    if (c.data) await write(Buffer.from(c.data, "base64"));
    at = c.next_offset;
    if (c.complete) return at;
    if (!opts.follow && c.eof) return at;
  }
}

/** Offset where the last `lines` lines of a log begin. */
export async function tailOffset(client: Client, id: string, stream: Stream, lines: number): Promise<number> {
  const head = await client.logs(id, { stream, offset: 0, max_bytes: 0 });
  const size = head.size;
  if (lines <= 0) return size;
  const block = 64 * 1024;
  let end = size;
  let seen = 0;
  // A final newline ends the last line rather than starting an empty one.
  let skipTrailing = true;
  while (end > 0) {
    const start = Math.max(0, end - block);
    // The daemon caps every chunk (logs.max_chunk_bytes): read until the block is whole.
    const parts: Buffer[] = [];
    for (let at = start; at < end; ) {
      const c = await client.logs(id, { stream, offset: at, max_bytes: end - at });
      const part = Buffer.from(c.data, "base64");
      if (part.length === 0) throw new Error(`log ${stream} of ${id} shrank while reading it`);
      parts.push(part);
      at += part.length;
    }
    const buf = Buffer.concat(parts);
    for (let i = buf.length - 1; i >= 0; i--) {
      if (buf[i] !== 0x0a) {
        skipTrailing = false;
        continue;
      }
      if (skipTrailing) {
        skipTrailing = false;
        continue;
      }
      seen++;
      if (seen === lines) return start + i + 1;
    }
    end = start;
  }
  return 0;
}
