/**
 * `planter run -i` without a terminal: the caller's stdin, as it is read, to the job's stdin
 * (POST /v1/jobs/{id}/stdin, the bytes as they are), then its end. Each write is answered once its
 * bytes are in the job's pipe; a job that does not read holds the next write back (planterd
 * answers "full" with how much went in, and the rest is sent again), so a large input is never
 * all in memory. Bytes read while a write is under way are sent together with the next.
 */
import type { Client } from "../api/client.ts";
import { PlanterError } from "../api/errors.ts";

/** Bytes per write: planterd's default body limit ([api] max_body_bytes) and its most per write. */
export const STDIN_CHUNK = 1024 * 1024;
/** How long one write may wait for a job that does not read before it is asked again. */
const WAIT_MS = 60_000;

/** How sending ended: the caller's input ended (and the job's: "eof"); or the job stopped taking input. */
export type StdinEnd = "eof" | "sent" | "stopped";

type Api = Pick<Client, "writeStdinBytes">;

/**
 * The bytes of `input` to job `id`, then (with `eof`) the end of its input; a job that stops
 * taking input stops it. Says how it ended and how many bytes the job took.
 */
export async function sendStdin(
  api: Api,
  id: string,
  input: AsyncIterable<Uint8Array>,
  chunk = STDIN_CHUNK,
  eof = true,
): Promise<{ end: StdinEnd; written: number; readError?: Error }> {
  const reader = new ReadAhead(input);
  const size = { chunk, written: 0 };
  try {
    for (;;) {
      const data = await reader.take(size.chunk);
      if (data === null) break;
      if (data.length && !(await put(api, id, data, size))) return { end: "stopped", written: size.written };
    }
  } finally {
    reader.stop();
  }
  // An input that cannot be read (a directory, a broken device) ends as one that ended: the job
  // must not wait for bytes that will never come. The caller says why.
  const readError = reader.error ?? undefined;
  if (!eof) return { end: "sent", written: size.written, readError };
  return { end: (await put(api, id, null, size)) ? "eof" : "stopped", written: size.written, readError };
}

/** An input read one read ahead: `take` gives what has been read by now, at least one read. */
class ReadAhead {
  private it: AsyncIterator<Uint8Array> | null = null;
  private next: Promise<IteratorResult<Uint8Array>> | null = null;
  private held: Uint8Array | null = null;
  /** Why reading stopped before the input's end, if it did. */
  error: Error | null = null;

  constructor(input: AsyncIterable<Uint8Array>) {
    try {
      this.it = input[Symbol.asyncIterator]();
      this.next = this.it.next();
    } catch (e) {
      // A stdin that cannot be read at all (Bun's stream fails at once on a directory).
      this.error = e as Error;
    }
  }

  /** At most `max` bytes: one read waited for, then those already read; null at the end. */
  async take(max: number): Promise<Uint8Array | null> {
    const parts: Uint8Array[] = this.held ? [this.held] : [];
    let size = this.held?.length ?? 0;
    this.held = null;
    while (this.next && size < max) {
      let r: IteratorResult<Uint8Array> | typeof PENDING;
      try {
        r = parts.length ? await Promise.race([this.next, Promise.resolve(PENDING)]) : await this.next;
      } catch (e) {
        this.error = e as Error;
        this.next = null;
        break;
      }
      if (r === PENDING) break;
      if (r.done) {
        this.next = null;
        break;
      }
      this.next = (this.it as AsyncIterator<Uint8Array>).next();
      parts.push(r.value);
      size += r.value.length;
    }
    if (!parts.length) return null;
    const data = concat(parts, size);
    if (data.length <= max) return data;
    this.held = data.subarray(max);
    return data.subarray(0, max);
  }

  /** Stop reading (the job takes no more, or the end was sent). */
  stop(): void {
    if (this.next) void this.it?.return?.();
  }
}

const PENDING = Symbol("pending");

/**
 * One write (or the end, for null), again from where a full pipe stopped it, in smaller pieces
 * for a planterd whose body limit is lower (`size.chunk` shrinks for the writes after it too).
 * False: the job takes no more.
 */
async function put(
  api: Api,
  id: string,
  data: Uint8Array | null,
  size: { chunk: number; written: number },
): Promise<boolean> {
  if (data === null) return (await attempt(api, id, null)) === "ok";
  let from = 0;
  while (from < data.length) {
    const piece = data.subarray(from, from + size.chunk);
    const r = await attempt(api, id, piece);
    if (r === "stopped") return false;
    if (r === "smaller") {
      if (size.chunk <= 1024) throw new PlanterError("E_INTERNAL", "planterd refuses even 1 KiB of input at once");
      size.chunk = Math.floor(size.chunk / 2);
      continue;
    }
    const took = r === "ok" ? piece.length : r.written;
    from += took;
    size.written += took;
  }
  return true;
}

/** One request: "ok", how much went in before the pipe stayed full, "stopped", or "smaller" (too large a body). */
async function attempt(
  api: Api,
  id: string,
  data: Uint8Array | null,
): Promise<"ok" | "stopped" | "smaller" | { written: number }> {
  try {
    await api.writeStdinBytes(id, data ?? new Uint8Array(0), data ? { wait_ms: WAIT_MS } : { eof: true });
    return "ok";
  } catch (e) {
    if (e instanceof PlanterError && e.code === "E_PAYLOAD_TOO_LARGE" && data) return "smaller";
    if (!(e instanceof PlanterError) || e.code !== "E_CONFLICT") throw e;
    const d = e.details as { stdin?: string; written?: number } | undefined;
    if (d?.stdin !== "full" || data === null) return "stopped";
    return { written: d.written ?? 0 };
  }
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
