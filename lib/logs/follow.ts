/** Client side of logs: read or follow a stream from an offset, and find the offset of the last N lines. */
import type { Client } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";
import { FrameDecoder, type FrameEvent } from "../api/frames.ts";
import { type ByteStream, StreamCut } from "../api/stream.ts";
import { write as writeFd } from "../cli/output.ts";
import { TerminalFilter } from "../cli/terminal.ts";
import { isTerminal } from "../cli/tty.ts";

export type Stream = "stdout" | "stderr";

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
 * Whether `e` is how a planterd older than the byte streams refuses them (no `…/logs/raw`, no
 * `attach`): the client then does what it did before them. Those daemons' messages are fixed.
 */
export function olderDaemon(e: unknown): boolean {
  if (!(e instanceof PlanterError)) return false;
  if (e.code === "E_NOT_FOUND")
    return e.message.startsWith("no such endpoint: GET /v1/jobs/") && e.message.endsWith("/logs/raw");
  return e.code === "E_BAD_REQUEST" && e.message === 'unknown query parameter "attach"';
}

/**
 * Copy a job's log from `offset` to `write` through its byte stream. With `follow`, keep going
 * until the job has ended and every byte is read; without, stop at the current end. Returns the
 * next offset.
 */
export async function streamLog(
  client: Client,
  id: string,
  stream: Stream,
  offset: number,
  write: (data: Uint8Array) => Promise<void>,
  opts: { follow: boolean; signal?: AbortSignal },
): Promise<number> {
  let s: ByteStream;
  try {
    s = await client.logStream(id, { stream, offset, follow: opts.follow }, opts.signal);
  } catch (e) {
    if (olderDaemon(e)) return copyLog(client, id, stream, offset, write, opts);
    throw e;
  }
  let at = offset;
  try {
    for await (const chunk of s) {
      await write(chunk);
      at += chunk.length;
    }
  } catch (e) {
    if (!(e instanceof StreamCut)) throw e;
    throw lostAt(client, id, stream, at, opts.follow);
  }
  return at;
}

/** The error of a read cut at byte `at` (planterd gone), with the command that reads on from there. */
export function lostAt(client: Client, id: string, stream: Stream, at: number, follow: boolean): PlanterError {
  return new PlanterError(
    "E_DAEMON_UNREACHABLE",
    `lost the connection to planterd at ${client.socketPath} at byte ${at} of ${stream} of job ${id}`,
    {
      hint: `read on from there: planter logs${follow ? " -f" : ""}${stream === "stderr" ? " --stderr" : ""} --offset ${at} ${id}`,
    },
  );
}

/**
 * The frames of an attached run (lib/api/frames.ts) as they arrive; a stream that ends anywhere
 * but after the job's final record is E_DAEMON_UNREACHABLE, with the way to read on.
 */
export async function* runFrames(client: Client, s: ByteStream): AsyncGenerator<FrameEvent> {
  const decoder = new FrameDecoder();
  let id: string | null = null;
  let records = 0;
  try {
    for await (const chunk of s) {
      for (const f of decoder.push(chunk)) {
        if (f.kind === "job") {
          id = f.job.id;
          records++;
        }
        yield f;
      }
    }
  } catch (e) {
    if (!(e instanceof StreamCut)) throw e;
  }
  if (records < 2) {
    throw new PlanterError(
      "E_DAEMON_UNREACHABLE",
      `lost the connection to planterd at ${client.socketPath}${id ? ` while job ${id} ran` : " before the job was submitted"}`,
      id
        ? { hint: `the job goes on and keeps its output: planter logs -f ${id}; its exit code: planter job wait ${id}` }
        : { hint: "see `planter job ls` for whether it was" },
    );
  }
}

/**
 * Copy a job's log from `offset` to `write` with JSON chunks (`GET …/logs`), for a planterd that
 * has no byte streams. With `follow`, keep going until the job has ended and every byte is read;
 * without, stop at the current end. Returns the next offset.
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
        follow: opts.follow,
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
