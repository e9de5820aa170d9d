/**
 * The client's side of planterd's byte streams (`GET …/logs/raw`, `POST /v1/jobs?attach=1`): one
 * HTTP/1.1 request on a connection of its own (Bun.connect), the response read by hand. Bun's
 * fetch spent about twice the CPU per byte on a 200 MB log (bench/logs.ts) and cannot tell a
 * body cut short from a whole one by itself; here the socket is paused while the reader has a
 * megabyte waiting, so a slow reader (a pipe, a terminal) holds planterd back instead of
 * filling this process's memory.
 */
import { whenRead } from "./accepted.ts";

/** A response being read: status, headers (lowercase names), then the body chunk by chunk. */
export interface ByteStream extends AsyncIterable<Uint8Array> {
  status: number;
  headers: Record<string, string>;
  /** The whole body as text (for an error answer). */
  text(): Promise<string>;
  /** Drop the connection (the stream ends with an AbortError for a reader still waiting). */
  close(): void;
}

/** The connection ended before the body did (planterd stopped or failed mid-stream). */
export class StreamCut extends Error {
  constructor(readonly received: number) {
    super(`the connection closed after ${received} bytes of the response body, before its end`);
    this.name = "StreamCut";
  }
}

/** Bytes waiting for the reader before the socket is paused. */
const HIGH_WATER = 1 << 20;
/** Longest response head accepted. */
const MAX_HEAD = 64 * 1024;

/** The error an aborted request rejects with (the client's and a stream's alike). */
export function abortError(): Error {
  const e = new Error("the request was aborted");
  e.name = "AbortError";
  return e;
}

/** Where the head's blank line begins, or -1. */
function headEnd(b: Uint8Array): number {
  for (let i = b.indexOf(0x0d); i >= 0 && i + 3 < b.length; i = b.indexOf(0x0d, i + 1))
    if (b[i + 1] === 0x0a && b[i + 2] === 0x0d && b[i + 3] === 0x0a) return i;
  return -1;
}

/**
 * Bytes as latin1 text. Never through `.buffer`: on a socket's chunk, JSC's getter copies the
 * whole chunk into an ArrayBuffer of its own (a 200 MB log spent 60 ms of CPU there).
 */
function latin1(b: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < to; i++) s += String.fromCharCode(b[i] as number);
  return s;
}

/**
 * Parses a response as it arrives: the head, then a body by Content-Length, by chunked
 * transfer coding, or up to the connection's close. Pure (no socket): tested piece by piece.
 */
/** The status and headers (names lower-cased) of an HTTP/1.x answer's head, without its blank line. */
export function parseHead(text: string): { status: number; headers: Record<string, string> } {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!m)
    throw new Error(`planterd answered something that is not HTTP: ${JSON.stringify((lines[0] ?? "").slice(0, 80))}`);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const colon = l.indexOf(":");
    if (colon > 0) headers[l.slice(0, colon).trim().toLowerCase()] = l.slice(colon + 1).trim();
  }
  return { status: Number(m[1]), headers };
}

export class ResponseParser {
  status = 0;
  headers: Record<string, string> = {};
  /** The head has been read. */
  headDone = false;
  /** The body has ended as its framing says. */
  done = false;
  private head: Uint8Array = new Uint8Array(0);
  private mode: "length" | "chunked" | "close" = "close";
  /** Body bytes left: of the Content-Length, or of the current chunk. */
  private left = 0;
  /** Chunked coding: where in a chunk's framing the parser is. */
  private chunkState: "size" | "data" | "data-crlf" | "trailer" = "size";
  private line = "";
  bodyBytes = 0;

  /** Feed bytes; returns the body pieces in them (views of `chunk`, never copies). */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let data = chunk;
    if (!this.headDone) {
      const joined = this.head.length ? Buffer.concat([this.head, chunk]) : chunk;
      const end = headEnd(joined);
      if (end < 0) {
        if (joined.length > MAX_HEAD) throw new Error(`planterd's response head is longer than ${MAX_HEAD} bytes`);
        this.head = joined;
        return out;
      }
      this.parseHead(latin1(joined, 0, end));
      data = joined.subarray(end + 4);
      this.head = new Uint8Array(0);
    }
    if (this.done) return out;
    if (this.mode === "close") {
      if (data.length) out.push(data);
    } else if (this.mode === "length") {
      const n = Math.min(this.left, data.length);
      if (n) out.push(data.subarray(0, n));
      this.left -= n;
      if (this.left === 0) this.done = true;
    } else this.chunked(data, out);
    for (const p of out) this.bodyBytes += p.length;
    return out;
  }

  private parseHead(text: string): void {
    const head = parseHead(text);
    this.status = head.status;
    this.headers = head.headers;
    this.headDone = true;
    if ((this.headers["transfer-encoding"] ?? "").toLowerCase().includes("chunked")) this.mode = "chunked";
    else if (this.headers["content-length"] !== undefined) {
      this.mode = "length";
      this.left = Number(this.headers["content-length"]);
      if (!Number.isSafeInteger(this.left) || this.left < 0)
        throw new Error(`bad Content-Length ${this.headers["content-length"]}`);
      if (this.left === 0) this.done = true;
    } else if (this.status === 204 || this.status === 304) this.done = true;
  }

  private chunked(data: Uint8Array, out: Uint8Array[]): void {
    let at = 0;
    while (at < data.length && !this.done) {
      if (this.chunkState === "data") {
        const n = Math.min(this.left, data.length - at);
        out.push(data.subarray(at, at + n));
        at += n;
        this.left -= n;
        if (this.left === 0) this.chunkState = "data-crlf";
        continue;
      }
      // The framing lines: a size line, the CRLF after a chunk's data, trailer lines.
      const nl = data.indexOf(0x0a, at);
      const end = nl < 0 ? data.length : nl + 1;
      this.line += latin1(data, at, end);
      at = end;
      if (this.line.length > 4096) throw new Error("a chunk line of planterd's response is too long");
      if (nl < 0) break;
      const line = this.line.replace(/\r?\n$/, "");
      this.line = "";
      this.framingLine(line);
    }
  }

  /** A whole framing line (without its line end): the CRLF after a chunk's data, a size line, or a trailer line. */
  private framingLine(line: string): void {
    if (this.chunkState === "data-crlf") {
      if (line !== "") throw new Error("bad chunked coding in planterd's response");
      this.chunkState = "size";
    } else if (this.chunkState === "size") {
      const size = Number.parseInt(line.split(";")[0] ?? "", 16);
      if (!Number.isSafeInteger(size) || size < 0) throw new Error(`bad chunk size ${JSON.stringify(line)}`);
      if (size === 0) this.chunkState = "trailer";
      else {
        this.left = size;
        this.chunkState = "data";
      }
    } else if (line === "") this.done = true; // the empty line after the trailers
  }

  /** Whether the connection closing now ends the body whole. */
  completeAtClose(): boolean {
    return this.done || (this.headDone && this.mode === "close");
  }
}

/**
 * Send one request on a new connection to `socketPath` and return the response as it arrives.
 * Rejects with the connection's error when it cannot be made (the caller says "unreachable").
 */
export async function openStream(
  socketPath: string,
  method: string,
  path: string,
  body?: string,
  signal?: AbortSignal,
  /**
   * Called with the connected socket's fd before a byte is sent (the client's check of who
   * listens, on the connection the request then uses); a throw refuses the connection.
   */
  verify?: (fd: number) => void,
  /** Fail with E_UNAVAILABLE when the listener has read nothing of the request in this many ms (lib/api/accepted.ts). */
  acceptMs?: number,
): Promise<ByteStream> {
  if (signal?.aborted) throw abortError();
  const payload = body === undefined ? new Uint8Array(0) : Buffer.from(body);
  const head =
    `${method} ${path} HTTP/1.1\r\nHost: planterd\r\nConnection: close\r\n` +
    (body === undefined ? "" : `Content-Type: application/json\r\nContent-Length: ${payload.length}\r\n`) +
    "\r\n";
  // Watched for being read (acceptMs): the body waits until the head was read, so a listener that
  // reads nothing now never finds a whole request queued for later (a stopped planterd, continued,
  // would create the job the client already reported as not sent).
  let held: Uint8Array | null = acceptMs && payload.length ? payload : null;
  let pending: Uint8Array = held ? Buffer.from(head, "latin1") : Buffer.concat([Buffer.from(head, "latin1"), payload]);
  const parser = new ResponseParser();
  const queue: Uint8Array[] = [];
  let queued = 0;
  let failure: Error | null = null;
  let closed = false;
  let paused = false;
  let wake: (() => void) | null = null;
  let headWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
    if (headWaiter && (parser.headDone || failure || closed)) {
      const h = headWaiter;
      headWaiter = null;
      if (parser.headDone) h.resolve();
      else h.reject(failure ?? new StreamCut(0));
    }
  };
  const fail = (e: Error) => {
    failure ??= e;
    notify();
  };
  const flush = (s: { write(d: Uint8Array): number }) => {
    while (pending.length) {
      const n = s.write(pending);
      if (n <= 0) return;
      pending = pending.subarray(n);
    }
  };
  const socket = await Bun.connect({
    unix: socketPath,
    socket: {
      binaryType: "uint8array",
      open: (s) => {
        if (verify) {
          try {
            verify((s as unknown as { fd?: number }).fd ?? -1);
          } catch (e) {
            fail(e as Error);
            s.terminate();
            return;
          }
        }
        flush(s);
        if (acceptMs) {
          const fd = (s as unknown as { fd?: number }).fd ?? -1;
          whenRead(fd, socketPath, acceptMs, () => parser.headDone || failure !== null || closed).then(
            () => {
              if (!held || failure || closed) return;
              pending = held;
              held = null;
              flush(s);
            },
            (e: Error) => {
              fail(e);
              s.terminate();
            },
          );
        }
      },
      drain: (s) => flush(s),
      data: (s, d) => {
        if (failure) return;
        let pieces: Uint8Array[];
        try {
          pieces = parser.push(d);
        } catch (e) {
          fail(e as Error);
          s.terminate();
          return;
        }
        for (const p of pieces) {
          queue.push(p);
          queued += p.length;
        }
        if (queued > HIGH_WATER && !paused) {
          paused = true;
          s.pause();
        }
        if (parser.done) s.end();
        notify();
      },
      close: () => {
        closed = true;
        if (!parser.completeAtClose() && !failure) fail(new StreamCut(parser.bodyBytes));
        notify();
      },
      error: (_s, e) => fail(e),
    },
  });
  const onAbort = () => {
    fail(abortError());
    socket.terminate();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (!parser.headDone) {
      await new Promise<void>((resolve, reject) => {
        headWaiter = { resolve, reject };
        notify();
      });
    }
  } catch (e) {
    signal?.removeEventListener("abort", onAbort);
    socket.terminate();
    throw e;
  }

  async function* chunks(): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const next = queue.shift();
        if (next) {
          queued -= next.length;
          if (paused && queued <= HIGH_WATER / 2) {
            paused = false;
            socket.resume();
          }
          yield next;
          continue;
        }
        if (failure) throw failure;
        if (parser.done || closed) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!closed) socket.terminate();
    }
  }

  return {
    status: parser.status,
    headers: parser.headers,
    [Symbol.asyncIterator]: chunks,
    async text() {
      const parts: Uint8Array[] = [];
      for await (const c of chunks()) parts.push(c);
      return Buffer.concat(parts).toString("utf8");
    },
    close() {
      fail(abortError());
      socket.terminate();
    },
  };
}
