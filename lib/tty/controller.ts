/**
 * A controller of a terminal holder: planterd's end of `tty.sock` (and the tests'). It sends
 * input, resizes, end of input and snapshot requests; it hears the hello, the output, snapshots
 * and the end.
 */
import {
  type End,
  EndSchema,
  FrameReader,
  frame,
  type Hello,
  HelloSchema,
  KIND,
  parsePayload,
  resizeFrame,
  type Snapshot,
  SnapshotSchema,
} from "./protocol.ts";

export interface ControllerEvents {
  output?: (data: Uint8Array) => void;
  /** A snapshot nobody asked for: the holder's redraw of a controller that fell behind. */
  snapshot?: (s: Snapshot) => void;
  end?: (e: End) => void;
  /** The connection closed (after the end, or the holder gone). */
  close?: () => void;
}

/** A connected controller. */
export class HolderConnection {
  private closedFlag = false;
  private waiters: ((s: Snapshot) => void)[] = [];

  private constructor(
    private readonly socket: Bun.Socket<undefined>,
    readonly hello: Hello,
  ) {}

  /** Connect to the holder at `path`; resolves with its hello. */
  static connect(path: string, events: ControllerEvents = {}): Promise<HolderConnection> {
    return new Promise((resolve, reject) => {
      const reader = new FrameReader();
      let conn: HolderConnection | null = null;
      const onFrame = (socket: Bun.Socket<undefined>, kind: number, payload: Uint8Array) => {
        if (!conn) {
          if (kind !== KIND.hello) throw new Error("the holder did not say hello");
          conn = new HolderConnection(socket, parsePayload(HelloSchema, payload));
          resolve(conn);
          return;
        }
        if (kind === KIND.output) events.output?.(payload);
        else if (kind === KIND.snapshot) {
          const s = parsePayload(SnapshotSchema, payload);
          // An answer to snapshot(), or a redraw the holder sends on its own (after falling behind).
          const waiters = conn.waiters.splice(0);
          if (waiters.length) for (const w of waiters) w(s);
          else events.snapshot?.(s);
        } else if (kind === KIND.end) events.end?.(parsePayload(EndSchema, payload));
      };
      Bun.connect({
        unix: path,
        socket: {
          data(socket, chunk) {
            try {
              for (const f of reader.push(chunk)) onFrame(socket, f.kind, f.payload);
            } catch (e) {
              socket.end();
              reject(e);
            }
          },
          drain() {
            conn?.drain();
          },
          close() {
            if (conn) conn.closedFlag = true;
            else reject(new Error(`the holder at ${path} closed the connection`));
            events.close?.();
          },
          error(_s, e) {
            reject(e);
          },
        },
      }).catch(reject);
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Keystrokes (or any bytes) to the job's terminal. */
  input(data: Uint8Array | string): void {
    this.write(frame(KIND.input, data));
  }

  resize(cols: number, rows: number): void {
    this.write(resizeFrame(cols, rows));
  }

  /** End of input: the terminal's EOF character. */
  eof(): void {
    this.write(frame(KIND.eof));
  }

  /** The screen as the holder's emulator has it now. */
  snapshot(): Promise<Snapshot> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.write(frame(KIND.snapshotRequest));
    });
  }

  close(): void {
    this.socket.end();
  }

  /** Bytes the socket did not take yet (Bun's sockets leave the rest to the caller). */
  private queued: Uint8Array[] = [];

  private write(f: Uint8Array): void {
    if (this.closedFlag) return;
    if (this.queued.length) {
      this.queued.push(f);
      return;
    }
    const n = this.socket.write(f);
    if (n < f.length) this.queued.push(f.subarray(Math.max(0, n)));
  }

  /** The socket can take more: send what waits. */
  drain(): void {
    while (this.queued.length) {
      const f = this.queued[0] as Uint8Array;
      const n = this.socket.write(f);
      if (n < f.length) {
        this.queued[0] = f.subarray(Math.max(0, n));
        return;
      }
      this.queued.shift();
    }
  }
}
