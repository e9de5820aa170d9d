/**
 * The task share of jobs no cgroup limits (planterd unprivileged, `[monitor] cgroup = "off"`):
 * RLIMIT_NPROC for the recorders and for the jobs, so that nothing planterd starts can take the
 * tasks planterd itself needs.
 *
 * The kernel checks a fork against the *forking* process's own RLIMIT_NPROC, counting every task
 * (threads too) of its real uid: planterd's threads, its jobs and whatever else runs as that uid.
 * Bun aborts when it cannot create a thread (plans/design.md, "Limits"), so a job of planterd's own
 * uid that forks until the uid's limit would take planterd down. Here the recorder of every such
 * job runs with RLIMIT_NPROC = the ceiling less planterd's reserve, and the job itself (the
 * recorder's child, before it execs the job, bwrap or setpriv) with that less a reserve for the
 * recorders and pumps of jobs starting meanwhile. All jobs together then stop at `jobs` tasks of the
 * uid, recorders at `recorders`, and planterd keeps the rest up to its own limit. Hard and soft
 * are both set: a job cannot raise them again. A job in its own user namespace (bwrap) is checked
 * against the limit bwrap had when it made the namespace, at the outer level, so it is held too.
 *
 * The ceiling is planterd's own soft limit, and never more than half of the host's task space
 * (kernel.threads-max and kernel.pid_max): the kernel gives every user threads-max / 2 by
 * default, and past pid_max no one on the host, planterd included, can fork. An unlimited
 * planterd (RLIMIT_NPROC infinity) keeps its own limit — lowering it would protect nothing, only
 * make planterd fail earlier — and its jobs get half the host's task space.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { HOST_ENV } from "../sandbox/env.ts";

/**
 * Tasks kept for planterd's own threads (JIT, GC and I/O workers are made on demand, some per
 * core; an idle planterd has 6–8 here, one under load some 20): 128, more on hosts of many cores.
 */
export const DAEMON_RESERVE = Math.max(128, 64 + 2 * availableParallelism());
/** Tasks kept for the recorders and pumps of jobs started while jobs hold their whole share. */
export const STARTS_RESERVE = 64;

export interface TaskShare {
  /** planterd's own soft RLIMIT_NPROC (null: unlimited). */
  own: number | null;
  /** The ceiling everything of planterd's is under: `own`, at most half the host's task space. */
  ceiling: number;
  /** RLIMIT_NPROC of each recorder (and its pumps). */
  recorders: number;
  /** RLIMIT_NPROC of each job: what all jobs together may hold of the uid's tasks. */
  jobs: number;
  /** The /bin/sh `ulimit` option that sets RLIMIT_NPROC (dash and busybox: -p; bash: -u). */
  flag: "-p" | "-u";
}

/** The share from planterd's own limit and the host's task space (pure). */
export function shareOf(own: number | null, threadsMax: number | null, pidMax: number | null): Omit<TaskShare, "flag"> {
  const host = Math.min(threadsMax ?? Number.POSITIVE_INFINITY, pidMax ?? Number.POSITIVE_INFINITY);
  const half = Number.isFinite(host) ? Math.floor(host / 2) : Number.POSITIVE_INFINITY;
  let ceiling = Math.min(own ?? Number.POSITIVE_INFINITY, half);
  // Neither planterd's limit nor the host's figures known: the kernel's own default for a user.
  if (!Number.isFinite(ceiling)) ceiling = 1 << 22;
  const recorders = Math.max(2, ceiling - DAEMON_RESERVE);
  const jobs = Math.max(1, recorders - STARTS_RESERVE);
  return { own, ceiling, recorders, jobs };
}

/** planterd's soft RLIMIT_NPROC from /proc/self/limits (null: unlimited; undefined: unreadable). */
export function ownNproc(limits: string): number | null | undefined {
  const m = /^Max processes\s+(\S+)\s+(\S+)/m.exec(limits);
  if (!m) return undefined;
  return m[1] === "unlimited" ? null : Number(m[1]);
}

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, "utf8").trim());
    return Number.isFinite(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Which `ulimit` option of /bin/sh sets RLIMIT_NPROC: tried, and read back from the shell's own
 * /proc/self/limits (bash's -p is the pipe size, read-only; dash's -u does not exist). Null when
 * neither does (the jobs then run with planterd's limit, as before).
 */
function shellFlag(value: number): "-p" | "-u" | null {
  for (const flag of ["-p", "-u"] as const) {
    const r = spawnSync("/bin/sh", ["-c", `ulimit ${flag} ${value} 2>/dev/null && exec cat /proc/self/limits`], {
      env: HOST_ENV,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    if (r.status !== 0) continue;
    const m = /^Max processes\s+(\d+)\s+(\d+)/m.exec(r.stdout);
    if (m && Number(m[1]) === value && Number(m[2]) === value) return flag;
  }
  return null;
}

let cached: TaskShare | null | undefined;

/**
 * The share of this planterd (computed once; Linux only). Null off Linux, where /proc/self/limits
 * cannot be read, or where /bin/sh cannot set the limit.
 */
export function taskShare(): TaskShare | null {
  if (cached !== undefined) return cached;
  cached = null;
  if (process.platform !== "linux") return cached;
  let limits: string;
  try {
    limits = readFileSync("/proc/self/limits", "utf8");
  } catch {
    return cached;
  }
  const own = ownNproc(limits);
  if (own === undefined) return cached;
  const share = shareOf(own, readNumber("/proc/sys/kernel/threads-max"), readNumber("/proc/sys/kernel/pid_max"));
  const flag = shellFlag(share.jobs);
  if (flag) cached = { ...share, flag };
  return cached;
}

/** The recorder's limits for a job under `share` (lib/jobs/recorder.ts). */
export const recorderLimits = (share: TaskShare) => ({ flag: share.flag, recorder: share.recorders, job: share.jobs });
