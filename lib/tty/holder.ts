/**
 * The terminal holder: one small process per interactive job that owns the PTY master, so the
 * job's terminal outlives planterd (a SIGKILL of planterd leaves it and the job running; a new
 * planterd reconnects). `planter tty-holder` (a hidden entry of the binary) runs it.
 *
 * planterd spawns it detached (a session of its own, no controlling terminal) with its orders as
 * JSON on stdin and the job's extra descriptors (bwrap's argument and bind fds) at 3, 4, …. It:
 * - makes the PTY, spawns the recorder with the slave as stdin/stdout/stderr (and the extra fds
 *   at their numbers), detached and without a controlling terminal (see pty.ts);
 * - appends every byte the terminal prints to the job's `stdout` log (stopping at `log_limit`);
 * - listens on `tty.sock` in the job dir (mode 0600, peers of its own uid or root only): the
 *   controllers' input, resizes, end of input, snapshots (protocol.ts);
 * - writes one line of JSON to stdout once the recorder runs (`Ready`), then closes stdout;
 * - when the terminal's last writer is gone and the recorder has exited, sends the end to every
 *   controller, removes the socket and exits.
 * Diagnostics go to stderr (the job's `stderr` log, which a terminal job does not otherwise use).
 */
import { chmodSync, closeSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { dirname, join } from "node:path";
import * as v from "valibot";
import { REPORT_OPEN } from "../agents/report.ts";
import { peerReader, socketFd } from "../daemon/peer.ts";
import { freshSessionKeyring } from "../jobs/keyring.ts";
import { startTime } from "../jobs/proc.ts";
import { type End, FrameReader, frame, type Hello, KIND, parseResize } from "./protocol.ts";
import { findSlave, openFds, redirectFd } from "./pty.ts";
import { Screen } from "./screen.ts";

/** A controller whose unsent output passes this is skipped ahead: it gets a redraw once it drains. */
export const CLIENT_BACKLOG = 4 << 20;
/** How often a controller that fell behind is looked at. */
const BEHIND_POLL_MS = 50;
/** How long the end waits for controllers to take their last bytes. */
const END_FLUSH_MS = 10_000;
/**
 * After the recorder's exit, a terminal still held open (a process the job left behind, until
 * planterd ends it with the job) has given the log what the job wrote once its output has been
 * quiet this long: the log is marked whole then, without waiting for the terminal to close.
 */
const QUIET_AFTER_EXIT_MS = 250;
/** The terminal's end-of-file character (VEOF's default, ^D): what "end of input" sends. */
const EOT = new Uint8Array([4]);

const Dim = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));

/** The holder's orders (stdin, JSON). */
export const HolderOrdersSchema = v.object({
  /** The recorder's argv (recorderArgv's). */
  argv: v.pipe(v.array(v.string()), v.minLength(1)),
  cwd: v.string(),
  env: v.record(v.string(), v.string()),
  cols: Dim,
  rows: Dim,
  /** The terminal type the job sees (TERM). */
  term: v.optional(v.string(), "xterm-256color"),
  /** Descriptors 3 … 3+fds-1 of the holder go to the recorder at the same numbers. */
  fds: v.pipe(v.number(), v.integer(), v.minValue(0)),
  /** The raw terminal stream's log (appended to) and the socket's path. */
  log: v.string(),
  socket: v.string(),
  /** Bytes the log may grow by, at most; null: no limit. */
  log_limit: v.nullable(v.number()),
  /**
   * An agent job's report FIFO (lib/agents/report.ts), held open read-write until the holder
   * exits: what a hook writes while planterd is down waits in the pipe (a FIFO nobody holds open
   * drops what was written into it once the writer closes).
   */
  hold: v.optional(v.nullable(v.string()), null),
  /**
   * A file whose `marker` becomes the PTY's path before the recorder starts (a Seatbelt profile
   * that refuses every terminal device but the job's own: lib/sandbox/seatbelt.ts).
   */
  tty_name: v.optional(v.nullable(v.object({ file: v.string(), marker: v.pipe(v.string(), v.minLength(8)) })), null),
});
export type HolderOrders = v.InferOutput<typeof HolderOrdersSchema>;

/**
 * Beside its socket (in the job's dir): the holder's `PID START` (written before it spawns the
 * recorder), and the mark it makes once the terminal's stream is whole in the log — the recorder
 * has exited and the PTY's last writer let go, every byte read and written. planterd records a
 * terminal job's end after that mark (or the holder's death, or a bound): a log read after
 * `job wait` is whole.
 */
export const HOLDER_FILE = "tty.holder";
export const LOG_WHOLE_FILE = "tty.done";

/** What the holder says once the recorder runs (one JSON line on stdout). */
export const ReadySchema = v.object({ holder: v.number(), pid: v.number(), tty: v.string() });
export type Ready = v.InferOutput<typeof ReadySchema>;

interface Controller {
  socket: Socket;
  reader: FrameReader;
  /** Output dropped because the controller fell behind: it gets a redraw once it has read the rest. */
  behind: boolean;
  /** Its redraw is being made. */
  redrawing: boolean;
}

/** Put the PTY's path in place of the marker in `file` (written whole, then renamed over it). */
export function nameTerminal(o: { file: string; marker: string }, tty: string): void {
  const text = readFileSync(o.file, "utf8");
  if (!text.includes(o.marker)) throw new Error(`${o.file} does not hold ${o.marker}`);
  const tmp = `${o.file}.tty`;
  writeFileSync(tmp, text.replaceAll(o.marker, tty), { mode: 0o600 });
  renameSync(tmp, o.file);
}

/** Run the holder to the job's end. */
export async function runHolder(orders: HolderOrders, out: (line: string) => void): Promise<number> {
  const controllers = new Set<Controller>();
  let cols = orders.cols;
  let rows = orders.rows;
  let outputBytes = 0;
  let logged = 0;
  let logFull = false;
  const log = openSync(orders.log, "a", 0o600);
  const dir = dirname(orders.socket);
  rmSync(join(dir, LOG_WHOLE_FILE), { force: true });
  writeFileSync(join(dir, HOLDER_FILE), `${process.pid} ${startTime(process.pid) ?? ""}\n`, { mode: 0o600 });
  const held = orders.hold === null ? -1 : openSync(orders.hold, REPORT_OPEN);
  // The emulator answers the job's queries into the terminal (set once the terminal exists).
  let answer: (data: string) => void = () => {};
  const screen = new Screen(cols, rows, (data) => answer(data));
  let ptyClosed!: () => void;
  const ptyDone = new Promise<void>((r) => {
    ptyClosed = r;
  });

  const broadcast = (kind: number, payload: Uint8Array | string) => {
    const f = frame(kind, payload);
    for (const c of controllers) send(c, f);
  };
  const send = (c: Controller, f: Uint8Array) => {
    if (c.behind) return;
    if (c.socket.writableLength > CLIENT_BACKLOG) {
      c.behind = true;
      watchBehind();
      return;
    }
    c.socket.write(f);
  };

  // A controller behind is looked at until it has taken what was buffered, then redrawn. (A poll:
  // Bun's node:net did not always emit 'drain' to a socket that had been skipped.)
  let behindTimer: Timer | null = null;
  const watchBehind = () => {
    behindTimer ??= setInterval(() => {
      let waiting = false;
      for (const c of controllers) {
        if (!c.behind || c.redrawing) continue;
        if (c.socket.writableLength > 0) {
          waiting = true;
          continue;
        }
        // Still behind until the redraw is written: output meanwhile is in the screen it draws.
        c.redrawing = true;
        void redraw(c).then(() => {
          c.behind = false;
          c.redrawing = false;
        });
      }
      if (!waiting && behindTimer) {
        clearInterval(behindTimer);
        behindTimer = null;
      }
    }, BEHIND_POLL_MS);
  };

  const onOutput = (data: Uint8Array) => {
    // Each chunk Bun hands over has a buffer of its own (checked): kept without a copy.
    const bytes = data;
    outputBytes += bytes.length;
    if (!logFull) {
      const room = orders.log_limit === null ? bytes.length : Math.min(bytes.length, orders.log_limit - logged);
      try {
        if (room > 0) writeSync(log, bytes, 0, room);
        logged += room;
      } catch (e) {
        console.error(`planter tty-holder: the log cannot be written: ${(e as Error).message}`);
        logFull = true;
      }
      if (orders.log_limit !== null && logged >= orders.log_limit) logFull = true;
    }
    screen.write(bytes);
    if (controllers.size) broadcast(KIND.output, bytes);
  };

  const before = openFds();
  const terminal = new Bun.Terminal({
    cols,
    rows,
    name: orders.term,
    data: (_t, data) => onOutput(data),
    exit: () => ptyClosed(),
  });
  answer = (data) => {
    if (!terminal.closed) terminal.write(data);
  };
  const slave = findSlave([...openFds()].filter((fd) => !before.has(fd)));
  if (orders.tty_name) nameTerminal(orders.tty_name, slave.name);
  const extra = Array.from({ length: orders.fds }, (_, i) => 3 + i);
  // The job's own empty session keyring, whatever the holder inherited (lib/jobs/keyring.ts).
  freshSessionKeyring();
  const proc = Bun.spawn(orders.argv, {
    cwd: orders.cwd,
    env: orders.env,
    stdio: [slave.fd, slave.fd, slave.fd, ...extra],
    detached: true,
  });
  const nul = openSync("/dev/null", "r");
  redirectFd(nul, slave.fd);
  closeSync(nul);
  for (const fd of extra) closeSync(fd);

  // Once the job's end is sent, a controller that connects before the socket is gone gets it at once.
  let ended: Uint8Array | null = null;
  const server = await listen(orders.socket, async (socket) => {
    if (ended) {
      socket.end(ended);
      return;
    }
    const c: Controller = { socket, reader: new FrameReader(), behind: false, redrawing: false };
    controllers.add(c);
    socket.on("close", () => controllers.delete(c));
    socket.on("error", () => controllers.delete(c));
    socket.on("data", (chunk: Buffer) => {
      let frames: { kind: number; payload: Uint8Array }[];
      try {
        frames = c.reader.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const f of frames) handle(c, f.kind, f.payload);
    });
    const hello: Hello = { cols, rows, pid: proc.pid, output_bytes: outputBytes, controllers: controllers.size };
    socket.write(frame(KIND.hello, JSON.stringify(hello)));
  });

  const redraw = async (c: Controller) => {
    const snap = await screen.snapshot();
    if (!c.socket.destroyed && !c.socket.writableEnded) c.socket.write(frame(KIND.snapshot, JSON.stringify(snap)));
  };

  const handle = (c: Controller, kind: number, payload: Uint8Array) => {
    if (kind === KIND.input) {
      if (!terminal.closed) terminal.write(payload);
    } else if (kind === KIND.resize) {
      const size = parseResize(payload);
      if (!size || terminal.closed || (size.cols === cols && size.rows === rows)) return;
      ({ cols, rows } = size);
      terminal.resize(cols, rows);
      screen.resize(cols, rows);
    } else if (kind === KIND.eof) {
      if (!terminal.closed) terminal.write(EOT);
    } else if (kind === KIND.snapshotRequest) {
      void redraw(c);
    } else c.socket.destroy(); // a controller that speaks another protocol is not one
  };

  try {
    out(`${JSON.stringify({ holder: process.pid, pid: proc.pid, tty: slave.name } satisfies Ready)}\n`);
  } catch {
    // planterd died before it read this: the job runs on, and the next planterd finds it by its
    // pid file and reconnects to the socket.
  }

  await proc.exited;
  // Every byte of the terminal is in the log once its last writer has let go (the kernel hands
  // over what it holds before the end); with a process left holding it, once its output is quiet.
  // Then planterd may record the end.
  let quiet: Timer | undefined;
  await Promise.race([
    ptyDone,
    new Promise<void>((resolve) => {
      let seen = outputBytes;
      const look = () => {
        if (outputBytes === seen) resolve();
        else {
          seen = outputBytes;
          quiet = setTimeout(look, QUIET_AFTER_EXIT_MS);
        }
      };
      quiet = setTimeout(look, QUIET_AFTER_EXIT_MS);
    }),
  ]);
  clearTimeout(quiet);
  try {
    writeFileSync(join(dir, LOG_WHOLE_FILE), "", { mode: 0o600 });
  } catch (e) {
    console.error(`planter tty-holder: ${(e as Error).message}`);
  }
  await ptyDone;
  const end: End = {
    code: proc.signalCode ? null : proc.exitCode,
    signal: proc.signalCode ? String(proc.signalCode).replace(/^SIG/, "") : null,
  };
  // A controller that fell behind gets the last screen before the end.
  const last = [...controllers].some((c) => c.behind) ? await screen.snapshot() : null;
  const flushed: Promise<unknown>[] = [];
  ended = frame(KIND.end, JSON.stringify(end));
  for (const c of controllers) {
    if (c.behind && last) c.socket.write(frame(KIND.snapshot, JSON.stringify(last)));
    c.behind = false;
    flushed.push(new Promise((r) => c.socket.once("close", r).once("finish", r)));
    c.socket.end(ended);
  }
  server.close();
  if (behindTimer) clearInterval(behindTimer);
  // The end reaches every controller that reads; one that does not read is not waited for long.
  let timer: Timer | undefined;
  await Promise.race([Promise.all(flushed), new Promise((r) => (timer = setTimeout(r, END_FLUSH_MS)))]);
  clearTimeout(timer);
  rmSync(orders.socket, { force: true });
  terminal.close();
  screen.dispose();
  closeSync(log);
  if (held >= 0) closeSync(held);
  return 0;
}

/** Listen on `path` (0600), accepting only peers of this process's uid (or root). */
async function listen(path: string, onConnection: (s: Socket) => void): Promise<Server> {
  const readPeer = await peerReader();
  const uid = process.getuid?.() ?? 0;
  rmSync(path, { force: true });
  const server = createServer((socket) => {
    const fd = socketFd(socket);
    const peer = fd !== null && readPeer ? readPeer(fd) : null;
    if (!peer || (peer.uid !== uid && peer.uid !== 0)) {
      socket.destroy();
      return;
    }
    onConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

/** The `planter tty-holder` entry: orders on stdin, `Ready` on stdout. */
export async function holderMain(): Promise<never> {
  let orders: HolderOrders;
  try {
    orders = v.parse(HolderOrdersSchema, JSON.parse(readFileSync(0, "utf8")));
  } catch (e) {
    console.error(`planter tty-holder: bad orders on stdin: ${(e as Error).message}`);
    process.exit(2);
  }
  // The holder outlives planterd: a terminal's hang-up or planterd's group signals are not its end.
  for (const sig of ["SIGHUP", "SIGINT", "SIGPIPE"] as const) process.on(sig, () => {});
  try {
    const code = await runHolder(orders, (line) => {
      writeSync(1, line);
      closeSync(1);
    });
    process.exit(code);
  } catch (e) {
    console.error(`planter tty-holder: ${(e as Error).message}`);
    process.exit(1);
  }
}
