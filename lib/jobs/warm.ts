/**
 * Warm sandboxes: when a sandboxed job ends, planterd makes the next one of its kind ahead of
 * demand — the job dir's files (logs, status placeholder, FIFOs), the cgroups, and the whole
 * process chain (warm recorder → setpriv → bwrap with the view → its init → `sh -s`, waiting for
 * its commands) — so that the next job of the same cell, user and policy starts by a rename and
 * two writes instead of ~20 ms of processes and file creation on its request's path.
 *
 * A warm sandbox is given to a job only when the plan planterd would render for that job now is
 * the one it was made with, byte for byte (the bwrap arguments, the seccomp program, the
 * process limit), each bind source is still the inode it was opened from, and the view guard
 * saw nothing it hangs on change meanwhile; otherwise the job starts cold, as before. The job's
 * own parts (argv, environment, cwd) are written to the sandbox's shell as shell commands through
 * a FIFO (never in a command line or an environment block); the recorder claims the job as every
 * recorder does (`pid`, exclusively) before it lets the shell `exec` it. A warm sandbox no job
 * takes within `[sandbox] warm_ms` is given up (its recorder's stdin closed: it exits, and nothing
 * ran); so is one whose planterd stops (the same end of stdin). See plans/design.md "Warm sandboxes".
 */
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Context } from "../daemon/context.ts";
import { jobDir } from "../paths.ts";
import type { PipeEnds, PlanInput, SpawnPlan } from "../sandbox/backend.ts";
import { HOST_ENV } from "../sandbox/env.ts";
import { closeEnds, openGate } from "../sandbox/gate.ts";
import { dropArgv, type Identity } from "../sandbox/identity.ts";
import { openInputs } from "../sandbox/inputs.ts";
import { groupMembers, groupProcs, removeGroup } from "./cgroup.ts";
import { freshSessionKeyring } from "./keyring.ts";
import { startTime } from "./proc.ts";
import { jobFiles, makePipes, prepareStatus, WARM_TOKEN_FILE, warmInput, warmRecorderArgv } from "./recorder.ts";

/** The argv of the shell a warm sandbox runs: it reads its job from its stdin (`warmScript`). */
export const WARM_SHELL = ["/bin/sh", "-s"];

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * What planterd writes to a warm sandbox's shell for a job: its cwd, its environment (exactly the
 * job's, and PWD its cwd, as bwrap's --chdir sets it in a cold sandbox; the shell's OLDPWD unset)
 * and its argv. Builtins only: nothing of the job runs until the recorder, having claimed the job,
 * sends `exec`.
 */
export function warmScript(job: { argv: string[]; env: Record<string, string>; cwd: string }): string {
  const env = Object.entries(job.env)
    .filter(([k]) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
    .map(([k, v]) => `export ${k}=${quote(v)}\n`)
    .join("");
  const cwd = quote(job.cwd);
  return `cd -- ${cwd} || exit 125\nunset OLDPWD\n${env}export PWD=${cwd}\nset -- ${job.argv.map(quote).join(" ")}\n`;
}

/** What a warm sandbox was made with: a job may take it only if its own plan is the same. */
interface Made {
  /** The plan's argv and byte inputs, and each bind source's path with the inode opened. */
  key: string;
}

/** A warm sandbox waiting for its job. */
export interface WarmSandbox extends Made {
  /** Given up (drop): never to be taken, whatever its gate answers later. */
  gone?: boolean;
  token: string;
  dir: string;
  proc: Subprocess<"pipe", number, number>;
  start: string | null;
  cgroup: string | null;
  /** planterd's end of the pipe on the recorder's fd 3: the job's status file is written there. */
  go: number;
  identity: Identity | null;
  guard: [string, string][];
  timer: Timer;
}

/** A warm sandbox being made: what to undo if a step fails. */
interface Making {
  token: string;
  dir: string;
  out: number;
  err: number;
  fds: number[];
  cgroup: string | null;
  watched: boolean;
  go: number;
  proc: Subprocess<"pipe", number, number> | null;
  /** planterd's ends of the sandbox's gate (lib/sandbox/gate.ts). */
  ends: PipeEnds;
}

/** The key of a plan: its argv, its byte inputs, its bind sources as (path, device, inode). */
export function planKey(plan: SpawnPlan, identity: Identity | null, fds?: number[]): string | null {
  // The process limit the gate sets (plan.nproc) is part of what a sandbox was made with.
  const parts: string[] = [JSON.stringify(identity), String(plan.nproc ?? ""), plan.argv.join("\0")];
  const inputs: PlanInput[] = plan.inputs ?? [];
  for (let i = 0; i < inputs.length; i++) {
    const input = inputs[i] as PlanInput;
    if ("data" in input) {
      parts.push(Buffer.from(input.data).toString("base64"));
      continue;
    }
    // Pipes to planterd are each sandbox's own (its gate): the same in every plan of a kind.
    if ("pipe" in input) {
      parts.push(`pipe:${input.pipe}`);
      continue;
    }
    // The inode bwrap will mount: the fd opened for it, or (a job's plan) the path now.
    let st: { dev: number; ino: number };
    try {
      st = fds ? fstatSync(fds[i] as number) : lstatSync(input.path);
    } catch {
      return null;
    }
    parts.push(`${input.path}\0${st.dev}:${st.ino}`);
  }
  return parts.join("\n");
}

/** The warm sandboxes of one planterd: at most one waits per key. */
export class WarmPool {
  private readonly ready = new Map<string, WarmSandbox>();
  private closed = false;

  constructor(
    private readonly ctx: Context,
    private readonly hooks: {
      /** Make the job's cgroups for a warm sandbox (null: none). */
      cgroup(name: string): string | null;
      /** Watch what the view's covers hang on; false when it cannot be (then no warm sandbox). */
      watch(id: string, entries: [string, string][]): boolean;
      unwatch(id: string): void;
    },
  ) {}

  /** How long a warm sandbox waits for a job; 0: none is made. */
  get ms(): number {
    return this.ctx.config.sandbox.warm_ms;
  }

  /** Whether any warm sandbox waits (a launch renders its warm plan only then). */
  get waiting(): boolean {
    return this.ready.size > 0;
  }

  /** The guard id of a warm sandbox (the view guard's job id while it waits). */
  static guardId(token: string): string {
    return `warm:${token}`;
  }

  /**
   * Make a warm sandbox for `plan` (the warm form of a job's plan: its job is `WARM_SHELL`) unless
   * one with the same key waits already. Never throws: a warm sandbox is only ever an optimisation.
   */
  make(plan: SpawnPlan, identity: Identity | null): void {
    if (this.closed || this.ms <= 0 || !plan.pipes) return;
    // Before anything is made: one waits already for this plan, or a bind source is gone.
    const before = planKey(plan, identity);
    if (before === null || this.ready.has(before)) return;
    const token = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
    const m: Making = {
      token,
      dir: join(warmRoot(this.ctx.paths.stateDir), token),
      out: -1,
      err: -1,
      fds: [],
      cgroup: null,
      watched: false,
      go: -1,
      proc: null,
      ends: {},
    };
    try {
      this.build(m, plan, identity, before);
    } catch {
      this.undo(m);
    } finally {
      for (const fd of [m.out, m.err, ...m.fds]) if (fd >= 0) closeSync(fd);
      closeEnds(m.ends);
    }
  }

  /** `make`'s steps: the dir and its files, the inputs, the guard, the groups, the recorder. */
  private build(m: Making, plan: SpawnPlan, identity: Identity | null, before: string): void {
    mkdirSync(warmRoot(this.ctx.paths.stateDir), { mode: 0o700, recursive: true });
    mkdirSync(m.dir, { mode: 0o700 });
    const files = jobFiles(m.dir);
    m.out = openSync(files.stdout, "a", 0o600);
    m.err = openSync(files.stderr, "a", 0o600);
    prepareStatus(files.status);
    makePipes(files.status);
    makeFifo(warmInput(files.status));
    writeFileSync(join(m.dir, WARM_TOKEN_FILE), `${m.token}\n`, { mode: 0o600 });
    m.fds = openInputs(plan.inputs ?? [], m.dir, identity, m.ends);
    // No job runs in a warm sandbox until planterd gives it one: a planterd gone before its gate
    // answers may let it go unchecked (its shell then finds no orders and ends), so the gate's
    // second write end (a job's --sync-fd) is not kept here: /dev/null in its place.
    const hold = (plan.inputs ?? []).findIndex((i) => "pipe" in i && i.pipe === "hold");
    if (hold >= 0) {
      closeSync(m.fds[hold] as number);
      m.fds[hold] = openSync("/dev/null", "r");
    }
    // The inodes opened are the ones looked at: a source replaced in between is not mounted unseen.
    const key = planKey(plan, identity, m.fds);
    if (key !== before) throw new Error("a bind source changed");
    m.watched = this.hooks.watch(WarmPool.guardId(m.token), plan.guard ?? []);
    if (!m.watched) throw new Error("its view cannot be guarded");
    // The recorder's fd 3 is the gate; the plan's inputs follow it, their numbers in the arguments moved up.
    const shifted = shiftFds(plan, m.fds, m.dir);
    if (!shifted) throw new Error("an input the warm sandbox cannot renumber");
    m.fds[0] = shifted.args;
    m.cgroup = this.hooks.cgroup(`w-${m.token}`);
    const argv = identity ? [...dropArgv(identity), ...shifted.argv] : shifted.argv;
    const [gateRead, gateWrite] = pipe();
    m.go = gateWrite;
    freshSessionKeyring();
    try {
      m.proc = Bun.spawn(warmRecorderArgv(m.token, argv, m.cgroup ? groupProcs(m.cgroup) : []), {
        cwd: plan.cwd,
        env: HOST_ENV,
        stdio: ["pipe", m.out, m.err, gateRead, ...m.fds],
        detached: true,
      });
    } finally {
      closeSync(gateRead);
    }
    const proc = m.proc;
    proc.stdin.write(`${files.status}\n`);
    proc.stdin.flush();
    const w: WarmSandbox = {
      key,
      token: m.token,
      dir: m.dir,
      proc,
      start: startTime(proc.pid),
      cgroup: m.cgroup,
      go: m.go,
      identity,
      guard: plan.guard ?? [],
      timer: setTimeout(() => this.drop(w), this.ms),
    };
    w.timer.unref?.();
    m.go = -1;
    // Taken by a job only once its gate let it go: its view is the one planned (lib/sandbox/gate.ts).
    const ends = m.ends;
    m.ends = {};
    const gate = openGate(ends, plan.planned, undefined, { nproc: plan.nproc, as: identity }).then(
      (r) => {
        if (r === "released" && proc.exitCode === null && !w.gone && !this.closed) this.ready.set(key, w);
        else this.drop(w);
      },
      () => {
        closeEnds(ends);
        this.drop(w);
      },
    );
    this.gates.add(gate);
    void gate.finally(() => this.gates.delete(gate));
    // A warm sandbox that ends while it waits (killed from outside) is given up.
    void proc.exited.then(() => {
      if (this.ready.get(w.key) === w) this.drop(w);
    });
  }

  /** A `make` that failed: what it made is undone; a recorder it started ends (the end of its stdin and fd 3). */
  private undo(m: Making): void {
    try {
      m.proc?.stdin.end();
    } catch {
      // closed already
    }
    if (m.go >= 0) closeSync(m.go);
    if (m.watched) this.hooks.unwatch(WarmPool.guardId(m.token));
    if (m.cgroup) removeGroup(m.cgroup);
    rmSync(m.dir, { recursive: true, force: true });
  }

  /**
   * The warm sandbox made for `plan` (a job's plan in its warm form), taken out of the pool; null
   * when none matches, or the one that matches is not ready yet. The caller gives it to its job
   * with `give` or gives it up with `drop`.
   */
  take(plan: SpawnPlan, identity: Identity | null): WarmSandbox | null {
    if (!this.ready.size) return null;
    const key = planKey(plan, identity);
    const w = key === null ? undefined : this.ready.get(key);
    if (!w) return null;
    // Ready once its sandbox's shell has entered the group: its redirections, the last opens of
    // the warm dir by path (each FIFO open waits for its other end: pumps and gate included), are
    // done. Before that the dir cannot be renamed under it: the job starts cold, the sandbox waits on.
    if (!w.cgroup || !groupMembers(w.cgroup).length) return null;
    this.ready.delete(key as string);
    clearTimeout(w.timer);
    if (w.proc.exitCode !== null || w.proc.signalCode !== null) {
      this.drop(w);
      return null;
    }
    return w;
  }

  /**
   * Give warm sandbox `w` to job `id`: the commands of the job to its shell, the dir renamed to the
   * job's (false, with the sandbox given up, when either cannot be done: the job then starts
   * cold). `beforeGo` runs once the dir is the job's and before the recorder is told (the job's
   * launch facts are recorded there); then the recorder claims the job and runs it.
   */
  give(w: WarmSandbox, id: string, script: string, beforeGo: (status: string) => void): boolean {
    const from = jobFiles(w.dir);
    const to = jobFiles(jobDir(this.ctx.paths.stateDir, id));
    let fd = -1;
    try {
      // The whole script must fit the FIFO at once (64 KiB): the shell reads it only after the claim.
      const bytes = Buffer.from(script);
      if (bytes.length > 60_000) throw new Error("too large");
      fd = openSync(warmInput(from.status), constants.O_WRONLY | constants.O_NONBLOCK);
      if (writeSync(fd, bytes) !== bytes.length) throw new Error("short write");
    } catch {
      if (fd >= 0) closeSync(fd);
      this.drop(w);
      return false;
    }
    closeSync(fd);
    try {
      renameNoReplace(w.dir, jobDir(this.ctx.paths.stateDir, id));
    } catch {
      this.drop(w);
      return false;
    }
    this.hooks.unwatch(WarmPool.guardId(w.token));
    try {
      beforeGo(to.status);
    } catch (e) {
      // Told nothing, the recorder sees the end of its stdin: the job never runs.
      this.drop(w);
      throw e;
    }
    // The stdin first: a planterd that stops before the gate leaves the recorder a path and no claim.
    w.proc.stdin.write(`${to.status}\n`);
    w.proc.stdin.end();
    writeSync(w.go, `${to.status}\n`);
    closeSync(w.go);
    w.go = -1;
    return true;
  }

  /** Give a warm sandbox up: its recorder's stdin closed (it exits, nothing ran), its dir and groups removed after. */
  drop(w: WarmSandbox): void {
    w.gone = true;
    if (this.ready.get(w.key) === w) this.ready.delete(w.key);
    clearTimeout(w.timer);
    this.hooks.unwatch(WarmPool.guardId(w.token));
    if (w.go >= 0) closeSync(w.go);
    w.go = -1;
    try {
      w.proc.stdin.end();
    } catch {
      // already closed
    }
    void w.proc.exited.then(() => {
      rmSync(w.dir, { recursive: true, force: true });
      if (w.cgroup) removeAfter(w.cgroup);
    });
  }

  /** The guard saw a change under warm sandbox `token`'s covers: given up. */
  changed(token: string): void {
    for (const w of this.ready.values()) if (w.token === token) this.drop(w);
  }

  /** planterd stops: every waiting sandbox is given up. */
  close(): void {
    this.closed = true;
    for (const w of [...this.ready.values()]) this.drop(w);
  }

  /** Gates of warm sandboxes under way (build): settled before planterd stops. */
  readonly gates = new Set<Promise<unknown>>();

  /**
   * Warm dirs a previous planterd left: their recorders saw its end (of their stdin and fd 3) and
   * end by themselves. A dir younger than SWEEP_AGE_MS may still be in its chain's opens by path
   * (each FIFO open waits for its other end): removed now, it would leave a waiting open for good.
   * Those are removed SWEEP_AGE_MS later (`later`: timers are planterd's; tests call it). Old ones go now.
   */
  static sweep(
    stateDir: string,
    now = Date.now(),
    later: (f: () => void) => void = (f) => {
      setTimeout(f, SWEEP_AGE_MS).unref?.();
    },
  ): void {
    const root = warmRoot(stateDir);
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      return;
    }
    const young: string[] = [];
    for (const name of names) {
      const at = statSync(join(root, name), { throwIfNoEntry: false })?.mtimeMs ?? 0;
      if (now - at < SWEEP_AGE_MS) young.push(name);
      else rmSync(join(root, name), { recursive: true, force: true });
    }
    if (young.length)
      later(() => {
        for (const name of young) rmSync(join(root, name), { recursive: true, force: true });
      });
  }
}

/** How old a warm dir a previous planterd left must be before a new planterd removes it. */
export const SWEEP_AGE_MS = 10_000;

/** Where warm sandboxes' dirs are made (on the jobs dir's filesystem: a job takes one by rename). */
const warmRoot = (stateDir: string) => join(stateDir, "warm");

/** Remove a given-up sandbox's groups once its processes have left them. */
function removeAfter(stored: string, tries = 50): void {
  if (removeGroup(stored) || tries <= 1) return;
  setTimeout(() => removeAfter(stored, tries - 1), 100).unref?.();
}

/** bwrap's options whose value is an fd (an input's number), as of bubblewrap 0.8. */
const FD_OPTIONS = new Set([
  "--args",
  "--userns",
  "--userns2",
  "--pidns",
  "--sync-fd",
  "--block-fd",
  "--userns-block-fd",
  "--info-fd",
  "--json-status-fd",
  "--seccomp",
  "--add-seccomp-fd",
  "--file",
  "--bind-data",
  "--ro-bind-data",
  "--bind-fd",
  "--ro-bind-fd",
]);

/**
 * The plan with every input `by` fds up (fd 3 is the warm recorder's gate; a recorder with stdin
 * keeps 6-9 for itself): its argv and a new fd of its argument list (bwrap's `--args`, the first
 * input), read from `fds[0]`. Null when an input is not named exactly once by an fd option known
 * here: it cannot be renumbered safely.
 */
export function shiftFds(plan: SpawnPlan, fds: number[], dir: string, by = 1): { argv: string[]; args: number } | null {
  const inputs = plan.inputs ?? [];
  const first = inputs[0];
  if (!first || !("data" in first)) return null;
  const words = new TextDecoder().decode(first.data).split("\0").slice(0, -1);
  const argv = [...plan.argv];
  const seen = new Map<number, number>();
  const bump = (list: string[], from: number, to: number) => {
    for (let i = from; i < to; i++) {
      if (!FD_OPTIONS.has(list[i] as string)) continue;
      const n = Number(list[i + 1]);
      if (!Number.isInteger(n) || n < 3 || n >= 3 + inputs.length) return false;
      seen.set(n, (seen.get(n) ?? 0) + 1);
      list[i + 1] = String(n + by);
      i++;
    }
    return true;
  };
  const end = argv.indexOf("--");
  if (!bump(argv, 1, end < 0 ? argv.length : end) || !bump(words, 0, words.length)) return null;
  for (let n = 3; n < 3 + inputs.length; n++) if (seen.get(n) !== 1) return null;
  closeSync(fds[0] as number);
  const [args] = openInputs([{ data: new TextEncoder().encode(words.map((w) => `${w}\0`).join("")) }], dir);
  return { argv, args: args as number };
}

let pipe2: ((fds: Int32Array, flags: number) => number) | null = null;
const O_CLOEXEC = 0o2000000;

/** An anonymous pipe, both ends close-on-exec: [read, write]. */
function pipe(): [number, number] {
  if (!pipe2) {
    const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
    pipe2 = dlopen("libc.so.6", { pipe2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 } }).symbols
      .pipe2 as unknown as typeof pipe2;
  }
  const fds = new Int32Array(2);
  if (pipe2?.(fds, O_CLOEXEC) !== 0) throw new Error("cannot make a pipe");
  return [fds[0] as number, fds[1] as number];
}

let mkfifo: ((path: Uint8Array, mode: number) => number) | null = null;
let renameat2: ((a: number, p: Uint8Array, b: number, q: Uint8Array, flags: number) => number) | null = null;

function libc() {
  if (mkfifo && renameat2) return;
  const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
  const l = dlopen("libc.so.6", {
    mkfifo: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    renameat2: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
  });
  mkfifo = l.symbols.mkfifo as unknown as typeof mkfifo;
  renameat2 = l.symbols.renameat2 as unknown as typeof renameat2;
}

const cstr = (s: string) => new TextEncoder().encode(`${s}\0`);

function makeFifo(path: string): void {
  libc();
  if (mkfifo?.(cstr(path), 0o600) !== 0) throw new Error(`cannot create the pipe ${path}`);
}

const AT_FDCWD = -100;
const RENAME_NOREPLACE = 1;

/** rename(2) that fails rather than replace what is at `to` (a job dir made meanwhile, say). */
function renameNoReplace(from: string, to: string): void {
  libc();
  if (renameat2?.(AT_FDCWD, cstr(from), AT_FDCWD, cstr(to), RENAME_NOREPLACE) !== 0) {
    throw new Error(`cannot rename ${from} to ${to}`);
  }
}
