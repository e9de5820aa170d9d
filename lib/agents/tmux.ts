/**
 * tmux, as the observer uses it: which servers there are (their sockets), and one call per server
 * per tick that lists every pane and captures the screens asked for (`list-panes -a -F …` then
 * `capture-pane -p -t PANE` for each, chained with `;` in one client). Every call of the program
 * goes through `tmux()`; what it prints is parsed by pure functions tested on literal output.
 *
 * A tmux server is its user's: a client talking to it must not be trusted by it, and must not
 * trust it either — a server can tell its clients to run a command (the protocol's MSG_SHELL), so
 * a root planterd runs the client as the socket's owner (setpriv), never as root.
 */
import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { exec, TOO_MUCH } from "../host/exec.ts";
import { setprivPath } from "../sandbox/identity.ts";

/** One tmux server's socket, and the uid and gid its client runs as. */
export interface Socket {
  path: string;
  uid: number;
  gid: number;
}

/** One pane as `list-panes -a -F PANE_FORMAT` prints it. */
export interface PaneInfo {
  pane_id: string;
  pane_pid: number;
  /** The server's pid (`#{pid}`). */
  server_pid: number;
  window: number;
  index: number;
  dead: boolean;
  session: string;
  command: string;
  title: string;
}

/** Fields of a pane, tab-separated: numbers first, the free texts last (the title last of all). */
export const PANE_FORMAT = [
  "#{pane_id}",
  "#{pane_pid}",
  "#{pid}",
  "#{window_index}",
  "#{pane_index}",
  "#{pane_dead}",
  "#{session_name}",
  "#{pane_current_command}",
  "#{pane_title}",
].join("\t");

/** Parse `list-panes -a -F PANE_FORMAT`; lines that do not fit are left out. */
export function parsePanes(text: string): PaneInfo[] {
  const out: PaneInfo[] = [];
  for (const line of text.split("\n")) {
    const f = line.split("\t");
    if (f.length < 9) continue;
    const [id, pid, server, window, index, dead, session] = f as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    if (!/^%\d+$/.test(id) || !/^\d+$/.test(pid) || !/^\d+$/.test(server)) continue;
    if (!/^\d+$/.test(window) || !/^\d+$/.test(index)) continue;
    // A command or session with a tab in it would shift the title: the title is the last field, the command the rest.
    out.push({
      pane_id: id,
      pane_pid: Number(pid),
      server_pid: Number(server),
      window: Number(window),
      index: Number(index),
      dead: dead === "1",
      session,
      command: f.slice(7, -1).join("\t"),
      title: f.at(-1) ?? "",
    });
  }
  return out;
}

/** What one tick of a server gave: its panes and the screens captured (by pane id). */
export interface Tick {
  panes: PaneInfo[];
  screens: Map<string, string>;
}

/**
 * The arguments of one tick: list every pane, then capture each of `capture` after a marker line.
 * `-u`: the client takes UTF-8 whatever the locale (without it a client in the C locale gets every
 * tab and non-ASCII character of a format as `_`).
 */
export function tickArgs(socket: string, capture: readonly string[], mark: string): string[] {
  const args = ["-u", "-S", socket, "list-panes", "-a", "-F", PANE_FORMAT];
  capture.forEach((pane, i) => {
    args.push(";", "display-message", "-p", `${mark}${i}`, ";", "capture-pane", "-p", "-t", pane);
  });
  return args;
}

/**
 * Split a tick's output: the pane list before the first marker, each screen after its marker. A
 * pane gone since the last tick ends the chain early (tmux stops at a failed command): the screens
 * after it are missing and are captured at the next tick.
 */
export function parseTick(out: string, capture: readonly string[], mark: string): Tick {
  const lines = out.split("\n");
  const at = capture.map((_, i) => lines.indexOf(`${mark}${i}`));
  const first = at.find((i) => i >= 0) ?? lines.length;
  const screens = new Map<string, string>();
  capture.forEach((pane, i) => {
    const start = at[i] as number;
    if (start < 0) return;
    const next = at.slice(i + 1).find((x) => x >= 0);
    // A screen's lines end at the next marker; the last one at the end of the output.
    let end = next ?? lines.length;
    // capture-pane's output ends with a newline: the last screen's final empty element is not a line.
    if (next === undefined && end > start + 1 && lines[end - 1] === "") end--;
    screens.set(pane, lines.slice(start + 1, end).join("\n"));
  });
  return { panes: parsePanes(lines.slice(0, first).join("\n")), screens };
}

/** How a failed call ended: the server is not there (its panes are gone) or did not answer. */
export type TickError = "gone" | "unreachable";

/**
 * The classification of a failed call by what the client said: no server there, or one that
 * exited while asked (or has no session left: it is exiting) is gone; anything else did not answer.
 */
export function tickError(code: number, stderr: string): TickError {
  const gone =
    /no server running|server exited unexpectedly|lost server|no current target|no sessions|error connecting to .*\((No such file or directory|Connection refused)\)/;
  return code !== 0 && gone.test(stderr) ? "gone" : "unreachable";
}

/** A tick's call must end within this (a server that hangs costs one tick, not the observer). */
const TICK_TIMEOUT_MS = 5000;
/**
 * …and say at most this much: the server end of a socket is its user's program, and a root
 * planterd must not hold whatever it sends (60 panes of 200×300 are under 4 MiB).
 */
const TICK_MAX_BYTES = 16 * 1024 * 1024;

let setpriv: string | null | undefined;

/** Run tmux as the socket's owner: directly when that is this process's uid, else through setpriv (as root). */
export async function tmux(sock: Socket, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const self = process.getuid?.() ?? 0;
  // Only PATH: no TMUX (a target would resolve against the caller's pane), no locale needed (tmux writes UTF-8).
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", TMUX: undefined, TMUX_PANE: undefined };
  const limits = { timeoutMs: TICK_TIMEOUT_MS, maxOutputBytes: TICK_MAX_BYTES, nothrow: true };
  if (sock.uid === self) return await exec("tmux", args, { env, ...limits });
  if (self !== 0) return { code: 1, stdout: "", stderr: `${sock.path} belongs to uid ${sock.uid}` };
  setpriv ??= (() => {
    try {
      return setprivPath();
    } catch {
      return null;
    }
  })();
  if (!setpriv)
    return { code: 1, stdout: "", stderr: "setpriv is not installed: other users' tmux servers are not read" };
  const bin = Bun.which("tmux", { PATH: env.PATH });
  if (!bin) return { code: 127, stdout: "", stderr: "tmux: not found" };
  const drop = [
    `--reuid=${sock.uid}`,
    `--regid=${sock.gid}`,
    "--clear-groups",
    "--no-new-privs",
    "--inh-caps=-all",
    "--",
  ];
  return await exec(setpriv, [...drop, bin, ...args], { env, ...limits });
}

/** One tick of a server: its panes and the screens of `capture`; an error (and what tmux said) when the call failed. */
export async function tick(
  sock: Socket,
  capture: readonly string[],
): Promise<Tick | { error: TickError; message: string }> {
  const mark = `planter-${crypto.randomUUID()}-`;
  const r = await tmux(sock, tickArgs(sock.path, capture, mark));
  // A pane gone since the last tick fails the chain (exit 1) after the list: what came is still good.
  if (r.code !== 0 && (r.code === TOO_MUCH || !r.stdout.includes("\t"))) {
    return { error: tickError(r.code, r.stderr), message: r.stderr.trim() };
  }
  return parseTick(r.stdout, capture, mark);
}

/** Whether tmux is on PATH at all. */
export function haveTmux(): boolean {
  return Bun.which("tmux", { PATH: process.env.PATH ?? "/usr/bin:/bin" }) !== null;
}

/** The default dirs of tmux sockets: TMUX_TMPDIR's and /tmp's `tmux-UID` (every user's, for root). */
export function defaultDirs(uid: number, env: Record<string, string | undefined> = process.env): string[] {
  const bases = [...new Set([env.TMUX_TMPDIR, "/tmp"].filter((b): b is string => Boolean(b)))];
  if (uid !== 0) return bases.map((b) => join(b, `tmux-${uid}`));
  const out: string[] = [];
  for (const base of bases) {
    let names: string[];
    try {
      names = readdirSync(base);
    } catch {
      continue;
    }
    for (const n of names) if (/^tmux-\d+$/.test(n)) out.push(join(base, n));
  }
  return out;
}

/**
 * The sockets in `dirs` and the `explicit` ones: real sockets only (no symlinks), each with its
 * owner. A default dir `tmux-UID` counts only when it is a real directory of that uid, closed to
 * others (what tmux itself insists on). Sockets of other users are only for root.
 */
export function findSockets(
  dirs: readonly string[],
  explicit: readonly string[],
  o: { self: number; checkDirNames: boolean },
): Socket[] {
  const out = new Map<string, Socket>();
  const add = (path: string) => {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(path);
    } catch {
      return;
    }
    if (!st.isSocket()) return;
    if (o.self !== 0 && st.uid !== o.self) return;
    out.set(path, { path, uid: st.uid, gid: st.gid });
  };
  for (const dir of dirs) {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(dir);
    } catch {
      continue;
    }
    if (!st.isDirectory()) continue;
    const named = /\/tmux-(\d+)$/.exec(dir);
    if (o.checkDirNames && (!named || Number(named[1]) !== st.uid || (st.mode & 0o077) !== 0)) continue;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) add(join(dir, n));
  }
  for (const p of explicit) add(p);
  return [...out.values()];
}
