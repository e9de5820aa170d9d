/**
 * The framing of an attached run (`POST /v1/jobs?attach=1`, content type FRAMES_TYPE): one
 * response carries the job as created, its stdout and stderr as they are written, and the job
 * as it ended. A frame is a kind byte, the payload's length (big-endian uint32), the payload:
 *
 *   `j` job record (UTF-8 JSON, as `GET /v1/jobs/{id}` answers) · `o` stdout bytes · `e` stderr bytes
 *
 * The stream is `j`, then `o`/`e` frames in the order planterd read them, then `j` once the job
 * has ended and every byte of both logs is sent; the response ends there. A response that ends
 * before its second `j` was cut (planterd stopped, the connection failed).
 */
import type { Job } from "./contract.ts";

export const FRAMES_TYPE = "application/x-planter-frames";
/** Bytes before a frame's payload: kind and length. */
export const FRAME_HEADER = 5;

export const FRAME_KIND = { job: 0x6a, stdout: 0x6f, stderr: 0x65 } as const;

/** Write a frame header at `at` of `buf`. */
export function putHeader(buf: Uint8Array, at: number, kind: number, length: number): void {
  buf[at] = kind;
  buf[at + 1] = length >>> 24;
  buf[at + 2] = (length >>> 16) & 0xff;
  buf[at + 3] = (length >>> 8) & 0xff;
  buf[at + 4] = length & 0xff;
}

/** A whole `j` frame. */
export function jobFrame(job: Job): Buffer {
  const json = Buffer.from(JSON.stringify(job));
  const buf = Buffer.allocUnsafe(FRAME_HEADER + json.length);
  putHeader(buf, 0, FRAME_KIND.job, json.length);
  json.copy(buf, FRAME_HEADER);
  return buf;
}

/** What a frame stream carries: a job record, or a piece of a log (a frame's payload may come in several). */
export type FrameEvent = { kind: "job"; job: Job } | { kind: "stdout" | "stderr"; data: Uint8Array };

/**
 * Decodes a frame stream pushed in pieces of any size. Log payloads are passed on as they come,
 * without copying; job records are collected whole.
 */
export class FrameDecoder {
  private header = new Uint8Array(FRAME_HEADER);
  private headerHave = 0;
  private kind = 0;
  private left = 0;
  private record: Uint8Array[] = [];

  /** Whether the stream is between frames (a stream may end only there). */
  get atBoundary(): boolean {
    return this.headerHave === 0 && this.left === 0;
  }

  push(chunk: Uint8Array): FrameEvent[] {
    const out: FrameEvent[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.headerHave < FRAME_HEADER) {
        const n = Math.min(FRAME_HEADER - this.headerHave, chunk.length - at);
        this.header.set(chunk.subarray(at, at + n), this.headerHave);
        this.headerHave += n;
        at += n;
        if (this.headerHave < FRAME_HEADER) break;
        this.kind = this.header[0] as number;
        const h = this.header;
        this.left =
          (((h[1] as number) << 24) | ((h[2] as number) << 16) | ((h[3] as number) << 8) | (h[4] as number)) >>> 0;
        if (this.kind !== FRAME_KIND.job && this.kind !== FRAME_KIND.stdout && this.kind !== FRAME_KIND.stderr)
          throw new Error(`unknown frame kind 0x${this.kind.toString(16)} in planterd's stream`);
        if (this.left === 0) this.endFrame(out);
        continue;
      }
      const n = Math.min(this.left, chunk.length - at);
      const piece = chunk.subarray(at, at + n);
      at += n;
      this.left -= n;
      if (this.kind === FRAME_KIND.job) this.record.push(piece);
      else out.push({ kind: this.kind === FRAME_KIND.stdout ? "stdout" : "stderr", data: piece });
      if (this.left === 0) this.endFrame(out);
    }
    return out;
  }

  private endFrame(out: FrameEvent[]): void {
    if (this.kind === FRAME_KIND.job) {
      out.push({ kind: "job", job: JSON.parse(Buffer.concat(this.record).toString("utf8")) as Job });
      this.record = [];
    }
    this.headerHave = 0;
  }
}
