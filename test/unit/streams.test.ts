/**
 * The byte streams' wire formats on literal bytes: the client's HTTP response parser and the
 * attached run's frames, fed whole and split at every byte; and how an older planterd's refusal
 * of the streams is recognised.
 */
import { describe, expect, test } from "bun:test";
import type { Job } from "../../lib/api/contract.ts";
import { PlanterError } from "../../lib/api/errors.ts";
import { FRAME_HEADER, FRAME_KIND, FrameDecoder, type FrameEvent, jobFrame, putHeader } from "../../lib/api/frames.ts";
import { ResponseParser } from "../../lib/api/stream.ts";
import { olderDaemon } from "../../lib/logs/follow.ts";

const bytes = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));
const text = (parts: Uint8Array[]) => Buffer.concat(parts).toString("latin1");

/** Feed `wire` to a new parser in pieces cut at `cuts`; the parser and the body it gave. */
function parse(wire: Uint8Array, cuts: number[] = []) {
  const p = new ResponseParser();
  const body: Uint8Array[] = [];
  let at = 0;
  for (const cut of [...cuts, wire.length]) {
    body.push(...p.push(wire.subarray(at, cut)));
    at = cut;
  }
  return { p, body: text(body) };
}

/** Every way to cut `wire` in two and in three (one cut fixed in the middle). */
function splits(wire: Uint8Array): number[][] {
  const out: number[][] = [[]];
  const mid = Math.floor(wire.length / 2);
  for (let i = 1; i < wire.length; i++) {
    out.push([i]);
    out.push(i < mid ? [i, mid] : i > mid ? [mid, i] : [i]);
  }
  return out;
}

describe("ResponseParser", () => {
  const chunked = bytes(
    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nPlanter-Offset: 7\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "5\r\nhello\r\n1;ext=1\r\n \r\nb\r\nworld\r\n\x00\xff\n!\r\n0\r\n\r\n",
  );

  test("a chunked body, split anywhere, gives the same bytes and ends at the last chunk", () => {
    for (const cuts of splits(chunked)) {
      const { p, body } = parse(chunked, cuts);
      expect({ cuts, body, done: p.done, status: p.status }).toEqual({
        cuts,
        body: "hello world\r\n\x00\xff\n!",
        done: true,
        status: 200,
      });
      expect(p.headers["planter-offset"]).toBe("7");
      expect(p.completeAtClose()).toBe(true);
    }
  });

  test("a chunked body cut before its last chunk is not complete at the close", () => {
    const cut = chunked.subarray(0, chunked.length - 5);
    const { p, body } = parse(cut);
    expect([body, p.done, p.completeAtClose()]).toEqual(["hello world\r\n\x00\xff\n!", false, false]);
  });

  test("a Content-Length body ends at its length; bytes after it are not body", () => {
    const wire = bytes('HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n{"a":"b"}extra');
    for (const cuts of splits(wire)) {
      const { p, body } = parse(wire, cuts);
      expect([p.status, body, p.done]).toEqual([404, '{"a":"b"}', true]);
    }
    const short = parse(bytes("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")).p;
    expect([short.done, short.completeAtClose()]).toEqual([false, false]);
    expect(parse(bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).p.done).toBe(true);
  });

  test("a body without length or chunks runs to the close", () => {
    const { p, body } = parse(bytes("HTTP/1.1 200 OK\r\n\r\nall of it"), [20, 22]);
    expect([body, p.done, p.completeAtClose()]).toEqual(["all of it", false, true]);
  });

  test("bad heads and bad chunk framing are errors, not data", () => {
    expect(() => new ResponseParser().push(bytes("SSH-2.0-OpenSSH\r\n\r\n"))).toThrow("not HTTP");
    expect(() => new ResponseParser().push(bytes("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"))).toThrow(
      "Content-Length",
    );
    const bad = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    expect(() => new ResponseParser().push(bad)).toThrow("chunk size");
    const noCrlf = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY\r\n");
    expect(() => new ResponseParser().push(noCrlf)).toThrow("chunked");
    expect(() => new ResponseParser().push(new Uint8Array(70_000).fill(0x41))).toThrow("longer than");
  });
});

describe("frames", () => {
  const job = { id: "j-1", state: "running", argv: ["echo", "ünï"] } as unknown as Job;
  const done = { ...job, state: "exited", exit_code: 0 } as unknown as Job;
  /** A data frame as planterd builds it: header space before the bytes, filled by putHeader. */
  const data = (kind: number, s: string) => {
    const b = Buffer.alloc(FRAME_HEADER + Buffer.byteLength(s, "latin1"));
    b.write(s, FRAME_HEADER, "latin1");
    putHeader(b, 0, kind, b.length - FRAME_HEADER);
    return b;
  };
  const wire = new Uint8Array(
    Buffer.concat([
      jobFrame(job),
      data(FRAME_KIND.stdout, "out 1\n"),
      data(FRAME_KIND.stderr, "err\x00\xff"),
      data(FRAME_KIND.stdout, ""),
      data(FRAME_KIND.stdout, "out 2\n"),
      jobFrame(done),
    ]),
  );

  /** Decoded events with the pieces of each data frame joined (they may come in several). */
  function decode(cuts: number[]) {
    const d = new FrameDecoder();
    const events: FrameEvent[] = [];
    let at = 0;
    for (const cut of [...cuts, wire.length]) {
      events.push(...d.push(wire.subarray(at, cut)));
      at = cut;
    }
    const joined: (string | Job)[] = [];
    let last: string | null = null;
    for (const e of events) {
      if (e.kind === "job") {
        joined.push(e.job);
        last = null;
        continue;
      }
      const piece = `${e.kind}:${Buffer.from(e.data).toString("latin1")}`;
      if (last?.startsWith(`${e.kind}:`)) joined[joined.length - 1] = `${last}${piece.slice(e.kind.length + 1)}`;
      else joined.push(piece);
      last = joined[joined.length - 1] as string;
    }
    return { joined, boundary: d.atBoundary };
  }

  test("the job, the output in order and the final job, however the bytes are cut", () => {
    for (const cuts of splits(wire)) {
      expect({ cuts, ...decode(cuts) }).toEqual({
        cuts,
        joined: [job, "stdout:out 1\n", "stderr:err\x00\xff", "stdout:out 2\n", done],
        boundary: true,
      });
    }
  });

  test("a stream cut inside a frame is not at a boundary; an unknown kind is an error", () => {
    const d = new FrameDecoder();
    d.push(wire.subarray(0, FRAME_HEADER + 3));
    expect(d.atBoundary).toBe(false);
    expect(() => new FrameDecoder().push(new Uint8Array([0x78, 0, 0, 0, 1, 0x41]))).toThrow("unknown frame kind 0x78");
  });

  test("a header holds lengths up to 2^32-1, big-endian", () => {
    const b = new Uint8Array(FRAME_HEADER);
    putHeader(b, 0, FRAME_KIND.stderr, 0xfedcba98);
    expect([...b]).toEqual([0x65, 0xfe, 0xdc, 0xba, 0x98]);
  });
});

describe("an older planterd", () => {
  test("its refusals of the streams, and only those, send the client back to JSON chunks", () => {
    const old = [
      new PlanterError("E_NOT_FOUND", "no such endpoint: GET /v1/jobs/j-abc/logs/raw"),
      new PlanterError("E_BAD_REQUEST", 'unknown query parameter "attach"'),
    ];
    for (const e of old) expect(olderDaemon(e)).toBe(true);
    const others = [
      new PlanterError("E_NOT_FOUND", 'no job "j-abc"'),
      new PlanterError("E_NOT_FOUND", "no such endpoint: GET /v1/jobz"),
      new PlanterError("E_BAD_REQUEST", 'unknown query parameter "attachx"'),
      new PlanterError("E_UNAUTHORIZED_PEER", 'unknown query parameter "attach"'),
      new Error('unknown query parameter "attach"'),
    ];
    for (const e of others) expect(olderDaemon(e)).toBe(false);
  });
});
