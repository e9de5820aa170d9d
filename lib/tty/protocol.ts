/**
 * The holder's control protocol: frames over the Unix socket `tty.sock` in the job's directory.
 * A frame is a kind byte, the payload's length (big-endian uint32), the payload. Controllers
 * (planterd, and tests) send input, resizes, end-of-input and snapshot requests; the holder sends a
 * hello on connect, the terminal's output as it is read, snapshots, and the end.
 *
 *   controller → holder: `i` input bytes · `r` resize (u16 cols, u16 rows) · `d` end of input
 *                        (the terminal's EOF character) · `s` snapshot request
 *   holder → controller: `h` hello (JSON `Hello`) · `o` output bytes · `S` snapshot (JSON `Snapshot`)
 *                        · `x` the end (JSON `End`), after the last output byte
 */
import * as v from "valibot";

export const HEADER = 5;
/** The largest payload either side accepts: a controller cannot make the holder buffer more. */
export const MAX_PAYLOAD = 1 << 20;

export const KIND = {
  input: 0x69, // i
  resize: 0x72, // r
  eof: 0x64, // d
  snapshotRequest: 0x73, // s
  hello: 0x68, // h
  output: 0x6f, // o
  snapshot: 0x53, // S
  end: 0x78, // x
} as const;

const Size = {
  cols: v.pipe(v.number(), v.integer(), v.minValue(1)),
  rows: v.pipe(v.number(), v.integer(), v.minValue(1)),
};

/** What the holder tells a controller on connect. */
export const HelloSchema = v.object({
  ...Size,
  /** The recorder's pid (the job's process tree hangs below it). */
  pid: v.number(),
  /** Bytes of output read from the terminal so far (the log may hold fewer: its limit). */
  output_bytes: v.number(),
  /** Connected controllers, this one included. */
  controllers: v.number(),
});
export type Hello = v.InferOutput<typeof HelloSchema>;

/** The screen as the holder's terminal emulator has it. */
export const SnapshotSchema = v.object({
  ...Size,
  cursor: v.object({ x: v.number(), y: v.number() }),
  /** The visible lines as text, trailing blanks trimmed. */
  lines: v.array(v.string()),
  /** Escape sequences that redraw the screen (and its modes) on a cleared terminal. */
  ansi: v.string(),
  /** Output the emulator skipped under a flood (the screen is rebuilt from the newest bytes). */
  skipped_bytes: v.number(),
});
export type Snapshot = v.InferOutput<typeof SnapshotSchema>;

/** How the job's recorder ended, once the terminal's last byte has been read. */
export const EndSchema = v.object({ code: v.nullable(v.number()), signal: v.nullable(v.string()) });
export type End = v.InferOutput<typeof EndSchema>;

/** One whole frame. */
export function frame(kind: number, payload: Uint8Array | string = new Uint8Array()): Uint8Array {
  const body = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const out = new Uint8Array(HEADER + body.length);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, body.length);
  out.set(body, HEADER);
  return out;
}

/** A resize frame. */
export function resizeFrame(cols: number, rows: number): Uint8Array {
  const p = new Uint8Array(4);
  const d = new DataView(p.buffer);
  d.setUint16(0, cols);
  d.setUint16(2, rows);
  return frame(KIND.resize, p);
}

/** The size in a resize frame's payload, or null when it is not one (a zero or short size). */
export function parseResize(p: Uint8Array): { cols: number; rows: number } | null {
  if (p.length !== 4) return null;
  const d = new DataView(p.buffer, p.byteOffset, 4);
  const cols = d.getUint16(0);
  const rows = d.getUint16(2);
  return cols > 0 && rows > 0 ? { cols, rows } : null;
}

/**
 * Splits a byte stream into frames. Payloads are collected whole (at most MAX_PAYLOAD);
 * a larger announced payload is a protocol error (thrown).
 */
export class FrameReader {
  private buf = new Uint8Array(0);

  push(chunk: Uint8Array): { kind: number; payload: Uint8Array }[] {
    const all = this.buf.length ? concat(this.buf, chunk) : chunk;
    const out: { kind: number; payload: Uint8Array }[] = [];
    let at = 0;
    while (all.length - at >= HEADER) {
      const len = new DataView(all.buffer, all.byteOffset + at + 1, 4).getUint32(0);
      if (len > MAX_PAYLOAD) throw new Error(`a frame of ${len} bytes (at most ${MAX_PAYLOAD})`);
      if (all.length - at < HEADER + len) break;
      out.push({ kind: all[at] as number, payload: all.slice(at + HEADER, at + HEADER + len) });
      at += HEADER + len;
    }
    this.buf = all.slice(at);
    return out;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A JSON payload checked against `schema`. */
export function parsePayload<T extends v.GenericSchema>(schema: T, p: Uint8Array): v.InferOutput<T> {
  return v.parse(schema, JSON.parse(new TextDecoder().decode(p)));
}
