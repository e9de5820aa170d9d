/**
 * The caller's side of an interactive job (`planter run -it`, `planter attach`): the caller's
 * terminal in raw mode (restored on every way out), its size passed on and followed (SIGWINCH),
 * keystrokes to the job with a detach sequence (default Ctrl-P Ctrl-Q) taken out, and the job's
 * output through the interactive TerminalFilter, so a job cannot make the caller's terminal
 * write the clipboard, retitle itself or answer queries into the caller's input.
 *
 * The job's end of the session is a `JobTerminal` — a holder connection today
 * (lib/tty/controller.ts), planterd's attach stream once the API carries it.
 */
import { PlanterError } from "../api/errors.ts";
import { rawMode, windowSize } from "./rawmode.ts";
import { INTERACTIVE_PRIVATE_MODES, TerminalFilter } from "./terminal.ts";

/** Docker's default detach sequence. */
export const DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q";

const CTRL_NAMES = "@abcdefghijklmnopqrstuvwxyz[\\]^_";

/**
 * The bytes of a detach-key spec, docker's format: keys separated by commas, each one character
 * or `ctrl-X` (X one of a–z @ [ \ ] ^ _). An empty spec, or one of another form, is refused.
 */
export function parseDetachKeys(spec: string): Uint8Array {
  const bytes: number[] = [];
  for (const raw of spec.split(",")) {
    const key = raw.trim();
    const ctrl = /^ctrl-(.)$/i.exec(key);
    if (ctrl) {
      const i = CTRL_NAMES.indexOf((ctrl[1] as string).toLowerCase());
      if (i < 0) throw badKeys(spec, `ctrl-${ctrl[1]} is not a control key`);
      bytes.push(i);
    } else if (key.length === 1 && key.charCodeAt(0) < 0x80) bytes.push(key.charCodeAt(0));
    else throw badKeys(spec, key ? `"${key}" is neither one character nor ctrl-X` : "an empty key");
  }
  return new Uint8Array(bytes);
}

const badKeys = (spec: string, why: string) =>
  new PlanterError("E_USAGE", `--detach-keys ${JSON.stringify(spec)}: ${why}`, {
    hint: 'keys separated by commas, each a character or ctrl-X (X: a-z @ [ \\ ] ^ _), e.g. --detach-keys "ctrl-a,d"',
  });

/**
 * Takes the detach sequence out of the keystrokes. A partial match is held until the next byte
 * decides: the sequence whole → detach (held bytes dropped); anything else → they go on, in order.
 */
export class DetachScanner {
  private held = 0;

  constructor(private readonly keys: Uint8Array) {}

  /** The bytes to pass on, and whether the sequence completed (bytes after it are not read). */
  push(chunk: Uint8Array): { forward: Uint8Array; detach: boolean } {
    const keys = this.keys;
    if (keys.length === 0) return { forward: chunk, detach: false };
    const out: number[] = [];
    for (const b of chunk) {
      if (b === keys[this.held]) {
        if (++this.held === keys.length) {
          this.held = 0;
          return { forward: new Uint8Array(out), detach: true };
        }
        continue;
      }
      for (let k = 0; k < this.held; k++) out.push(keys[k] as number);
      this.held = 0;
      if (b === keys[0]) {
        if (keys.length === 1) return { forward: new Uint8Array(out), detach: true };
        this.held = 1;
      } else out.push(b);
    }
    return { forward: new Uint8Array(out), detach: false };
  }
}

/**
 * What the session leaves the caller's terminal with: the modes an attached job may have set
 * (INTERACTIVE_PRIVATE_MODES) off, the main screen, a visible cursor, plain colours.
 */
export const TERMINAL_RESET =
  "\x1b[?1l\x1b>\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1004l\x1b[?2004l\x1b[?1049l\x1b[?25h\x1b[0m";

/** The job's side of a session. */
export interface JobTerminal {
  input(data: Uint8Array): void;
  resize(cols: number, rows: number): void;
  /** The screen as escape sequences that redraw it on a cleared terminal. */
  snapshot(): Promise<{ ansi: string }>;
  close(): void;
}

/** What the job's side reports to the session. */
export interface JobTerminalEvents {
  output(data: Uint8Array): void;
  /** The whole screen again (the caller fell behind and output was skipped). */
  snapshot(s: { ansi: string }): void;
  end(e: { code: number | null; signal: string | null }): void;
  close(): void;
}

export interface SessionOptions {
  /** The detach sequence (parseDetachKeys); empty: no detaching. */
  detachKeys?: Uint8Array;
  /** Watch only: keystrokes are not sent (the detach sequence still works). */
  readOnly?: boolean;
  /** The caller's terminal (default 0 and 1). */
  inFd?: number;
  outFd?: number;
  /** Keystrokes; default: the caller's stdin. */
  input?: AsyncIterable<Uint8Array>;
}

/** How a session ended. */
export type SessionEnd =
  | { how: "detached" }
  | { how: "ended"; code: number | null; signal: string | null }
  | { how: "lost" };

/**
 * Run an interactive session until the job ends, the caller detaches, or the connection is lost.
 * `connect` is handed the session's event handlers and returns the job's side.
 */
export async function runSession(
  connect: (events: JobTerminalEvents) => Promise<JobTerminal>,
  opts: SessionOptions = {},
): Promise<SessionEnd> {
  const inFd = opts.inFd ?? 0;
  const outFd = opts.outFd ?? 1;
  const filter = new TerminalFilter(INTERACTIVE_PRIVATE_MODES);
  const scanner = new DetachScanner(opts.detachKeys ?? parseDetachKeys(DEFAULT_DETACH_KEYS));
  const out = Bun.file(outFd).writer();
  const write = (bytes: Uint8Array | string) => {
    out.write(bytes);
    out.flush();
  };
  let settle!: (e: SessionEnd) => void;
  const done = new Promise<SessionEnd>((r) => {
    settle = r;
  });
  // Output before the redraw is in the redraw: held, then dropped.
  let held: Uint8Array[] | null = [];
  const raw = rawMode(inFd);
  let term: JobTerminal | null = null;
  const onWinch = () => {
    const size = windowSize(outFd) ?? windowSize(inFd);
    if (size && term) term.resize(size.cols, size.rows);
  };
  try {
    term = await connect({
      output: (data) => {
        if (held) held.push(data);
        else write(filter.push(data));
      },
      snapshot: (snap) => {
        if (held) return; // the first redraw, below, is newer
        write("\x1b[H\x1b[2J");
        write(filter.push(new TextEncoder().encode(snap.ansi)));
      },
      end: (e) => settle({ how: "ended", ...e }),
      close: () => settle({ how: "lost" }),
    });
    // The handler first: a resize between sending the size and listening would be lost.
    process.on("SIGWINCH", onWinch);
    onWinch();
    const snap = await term.snapshot();
    held = null;
    write("\x1b[H\x1b[2J");
    write(filter.push(new TextEncoder().encode(snap.ansi)));
    void pumpKeys(opts.input ?? Bun.file(inFd).stream(), scanner, term, opts.readOnly ?? false, settle, done);
    return await done;
  } finally {
    process.off("SIGWINCH", onWinch);
    term?.close();
    write(filter.end());
    write(TERMINAL_RESET);
    await out.end();
    raw.restore();
  }
}

async function pumpKeys(
  keys: AsyncIterable<Uint8Array>,
  scanner: DetachScanner,
  term: JobTerminal,
  readOnly: boolean,
  settle: (e: SessionEnd) => void,
  done: Promise<SessionEnd>,
): Promise<void> {
  let over = false;
  void done.then(() => {
    over = true;
  });
  for await (const chunk of keys) {
    if (over) return;
    const { forward, detach } = scanner.push(chunk);
    if (forward.length && !readOnly) term.input(forward);
    if (detach) {
      settle({ how: "detached" });
      return;
    }
  }
}
