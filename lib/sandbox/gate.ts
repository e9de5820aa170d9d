/**
 * The view gate: every bwrap sandbox waits, once its mounts are made and before anything of the
 * job runs, at its block pipe (`--info-fd`, `--block-fd`); planterd (or the process that spawned
 * the plan) reads the sandbox's `/proc/PID/mountinfo` from outside, compares it with the plan
 * (`planned`, plannedMounts in bwrap.ts), and only then writes the byte that lets it go on.
 *
 * From outside, because a check inside the sandbox would run programs of the very view it checks:
 * a concurrent job of the cell that lands a bind of its own file on /usr/bin/dash (one directory
 * swapped for a symlink while bwrap builds the view) would answer for it. The kernel's mount table
 * read by planterd answers for nothing the job made. (planter ran such a check, an awk over
 * /proc/self/mountinfo, before the gate; it cost ~5 ms per sandbox and added nothing to the gate.)
 *
 * Fail closed: the block pipe has a second write end inside bwrap (`--sync-fd`, kept by its init
 * and closed by the job's process), so planterd gone before it answers never ends the pipe: the
 * sandbox waits, and a restarted planterd ends a job it never released (supervisor.ts).
 */
import { closeSync, existsSync, fstatSync, readFileSync, readlinkSync, writeSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";
import { LIBC } from "../libc.ts";
import { readChildPid } from "../net/listen.ts";
import type { PipeEnds } from "./backend.ts";
import { HOST_ENV } from "./env.ts";
import { dropArgv, type Identity } from "./identity.ts";

/** The hint of every refusal: what a user can do about a view that was not the one planned. */
export const GATE_HINT =
  "a path on the way to one of its mounts changed while the sandbox was made (another job of the cell, or a process of yours, moved a directory): run it again, and look for symlinks where directories were";

/**
 * Why `mountinfo` (of the sandbox's first process) is not the view `planned` asks for, or null.
 * Only the sandbox's own mounts count: `--ro-bind / /` copies every host mount first, and the
 * plan's first mount after / is its own /dev, so counting starts again at the last /dev (the root
 * itself kept). Per path: as many read-only mounts as planned read-only, as many mounts as planned
 * (a planned writable bind may show read-only: its source mount's flag).
 */
export function viewProblem(mountinfo: string, planned: readonly string[]): string | null {
  const wantRo = new Map<string, number>();
  const wantAll = new Map<string, number>();
  const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (const line of planned) {
    const path = line.slice(0, line.lastIndexOf(" "));
    if (line.endsWith(" ro")) add(wantRo, path);
    add(wantAll, path);
  }
  let all = new Map<string, number>();
  let ro = new Map<string, number>();
  const root = { seen: false, all: 0, ro: 0 };
  for (const line of mountinfo.split("\n")) {
    const f = line.split(" ");
    const point = f[4];
    const opts = f[5];
    if (point === undefined || opts === undefined) continue;
    const isRo = opts.split(",")[0] === "ro";
    if (point === "/dev" && root.seen) {
      all = new Map([["/", root.all]]);
      ro = new Map([["/", root.ro]]);
    }
    add(all, point);
    if (isRo) add(ro, point);
    if (point === "/") {
      root.seen = true;
      root.all++;
      if (isRo) root.ro++;
    }
  }
  for (const [p, n] of wantRo) if ((ro.get(p) ?? 0) < n) return `no ${p} ro mount there`;
  for (const [p, n] of wantAll) if ((all.get(p) ?? 0) < n) return `no ${p} mount there`;
  return null;
}

/** The read system call's number (x86_64, arm64): what /proc/PID/syscall shows while bwrap waits. */
const READ_NR = process.arch === "arm64" ? "63" : "0";
/** How long a sandbox may take to make its mounts. */
const SETUP_MS = 30_000;

/**
 * Whether process `pid` (the sandbox's first) has reached its wait on the block pipe (inode
 * `pipe`): /proc/PID/syscall shows a read of an fd that is that pipe. (Not any read: bwrap's child
 * waits on an eventfd first, while its uid maps are written.) False when it ended first or took
 * longer than SETUP_MS.
 */
async function waiting(pid: number, pipe: number): Promise<boolean> {
  const deadline = Date.now() + SETUP_MS;
  for (let delay = 0.2; Date.now() < deadline; delay = Math.min(delay * 2, 1)) {
    let f: string[];
    try {
      f = readFileSync(`/proc/${pid}/syscall`, "utf8").trim().split(" ");
    } catch {
      return false;
    }
    if (f[0] === READ_NR && f[1]) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${Number.parseInt(f[1], 16)}`) === `pipe:[${pipe}]`) return true;
      } catch {
        // the read ended meanwhile: looked at again
      }
    }
    await Bun.sleep(delay);
  }
  return false;
}

let prlimitFn: ((pid: number, resource: number, limits: BigUint64Array, old: null) => number) | null = null;
let errnoOf: (() => number) | null = null;
/** RLIMIT_NPROC (Linux). */
const RLIMIT_NPROC = 6;
const EPERM = 1;
/** util-linux's prlimit: the limit set as the job's user where planterd may not set it itself. */
export const PRLIMIT = "/usr/bin/prlimit";

/**
 * Set RLIMIT_NPROC (soft and hard) of process `pid`, the sandbox's first, while it waits at the
 * gate: what it forks (the job) inherits it, and nothing has run in the sandbox yet with the job's
 * environment. prlimit(2) on another process needs the same uids and gids as it, or
 * CAP_SYS_RESOURCE: a user's planterd has the first; a root one has the second where the host left
 * it that (not in every container), else util-linux's prlimit does it as the job's user (`as`, the
 * identity bwrap was started as), with planter's own environment. Null, or why not.
 */
async function setNproc(pid: number, n: number, as: Identity | null): Promise<string | null> {
  if (!prlimitFn) {
    const { dlopen, FFIType: T, read } = await import("bun:ffi");
    const lib = dlopen(LIBC, {
      prlimit: { args: [T.i32, T.i32, T.ptr, T.ptr], returns: T.i32 },
      __errno_location: { args: [], returns: T.ptr },
    });
    prlimitFn = lib.symbols.prlimit as never;
    errnoOf = () => read.i32(lib.symbols.__errno_location() as never, 0);
  }
  const limits = new BigUint64Array([BigInt(n), BigInt(n)]);
  if (prlimitFn(pid, RLIMIT_NPROC, limits, null) === 0) return null;
  const errno = errnoOf?.() ?? 0;
  if (errno !== EPERM || !as || !existsSync(PRLIMIT)) return `prlimit(2): errno ${errno}`;
  const p = Bun.spawn([...dropArgv(as), PRLIMIT, `--pid=${pid}`, `--nproc=${n}:${n}`], {
    env: HOST_ENV,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  return code === 0 ? null : `prlimit as uid ${as.uid}: ${err.trim() || `exit ${code}`}`;
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone already
  }
}

/** Let the sandbox go on (a byte on its block pipe, planterd's end closed). */
export function release(ends: PipeEnds): void {
  const fd = ends.block;
  if (fd === undefined) return;
  delete ends.block;
  try {
    writeSync(fd, "1");
  } catch {
    // bwrap is gone: nothing waits
  } finally {
    closeSync(fd);
  }
}

/** Close planterd's ends without a word (the sandbox, held by its own end, waits until it is killed). */
export function closeEnds(ends: PipeEnds): void {
  for (const k of ["info", "block"] as const) {
    const fd = ends[k];
    if (fd === undefined) continue;
    delete ends[k];
    try {
      closeSync(fd);
    } catch {
      // closed already
    }
  }
}

/**
 * Wait for the sandbox's first process, compare its mounts with `planned`, run `before` (an egress
 * proxy's listeners: false when the job ended meanwhile), then let it go on: "released". "gone"
 * when the sandbox ended before it said its pid. Throws PlanterError (E_SANDBOX_UNAVAILABLE) when
 * the view is not the one planned: the caller kills the job, which never ran.
 */
export async function openGate(
  ends: PipeEnds,
  planned: readonly string[] | undefined,
  before?: (pid: number) => Promise<boolean>,
  limit?: { nproc: number | undefined; as: Identity | null },
): Promise<"released" | "gone"> {
  const pid = ends.info === undefined ? null : await readChildPid(ends.info);
  delete ends.info;
  if (pid === null) {
    closeEnds(ends);
    return "gone";
  }
  if (planned) {
    // bwrap says its pid right after the clone: its mounts are made once it waits on the pipe.
    if (ends.block === undefined || !(await waiting(pid, fstatSync(ends.block).ino))) {
      killQuietly(pid);
      closeEnds(ends);
      return "gone";
    }
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/mountinfo`, "utf8");
    } catch {
      closeEnds(ends);
      return "gone";
    }
    const why = viewProblem(text, planned);
    if (why) {
      // Its first process waits at the pipe with no parent-death signal yet: ended here, it never
      // runs anything (its parent, bwrap's monitor, then ends too).
      killQuietly(pid);
      throw new PlanterError(
        "E_SANDBOX_UNAVAILABLE",
        `the sandbox is not the view planned: ${why}; the job did not run`,
        {
          hint: GATE_HINT,
        },
      );
    }
  }
  if (limit?.nproc !== undefined) {
    const why = await setNproc(pid, limit.nproc, limit.as);
    if (why) {
      killQuietly(pid);
      throw new PlanterError(
        "E_SANDBOX_UNAVAILABLE",
        `the sandbox's process limit could not be set: ${why}; the job did not run`,
      );
    }
  }
  if (before && !(await before(pid))) {
    closeEnds(ends);
    return "gone";
  }
  release(ends);
  return "released";
}
