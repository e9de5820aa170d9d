import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { execSync } from "../../host/exec.ts";
import { ended, procStat, procText, startTime } from "../../jobs/proc.ts";
import type { LegacyJobFile } from "./schema.ts";
// ---------------------------------------------------------------------------------------------
// Jobs: is a job recorded as running still that process?

/** Tolerance between a legacy `started_at_ms` and the kernel's start time of its pid. */
export const START_TOLERANCE_MS = 3000;

/** /proc/<pid>/stat counts start times in USER_HZ ticks: 100 on every Linux ABI planter targets. */
const USER_HZ = 100;

/** What the kernel says about a live process: when it started, its argv, and planter's start-time token. */
export interface ProcessFacts {
  startMs: number;
  argv: string[] | null;
  token: string;
}

function bootTimeMs(): number | null {
  try {
    const m = /^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"));
    return m ? Number(m[1]) * 1000 : null;
  } catch {
    return null;
  }
}

/** Facts of a live (non-zombie) process, or null when it is gone. */
export function processFacts(pid: number): ProcessFacts | null {
  if (process.platform === "linux") {
    const st = procStat(pid);
    const boot = bootTimeMs();
    if (!st || ended(st) || boot === null) return null;
    const raw = procText(pid, "cmdline");
    const argv = raw === null ? null : raw.length ? raw.replace(/\0$/, "").split("\0") : [];
    return { startMs: boot + (Number(st.startTime) * 1000) / USER_HZ, argv, token: st.startTime };
  }
  // macOS: `ps` (second precision, and argv joined by spaces). Never run on macOS yet.
  const token = startTime(pid);
  if (!token) return null;
  const r = execSync("ps", ["-ww", "-o", "args=", "-p", String(pid)], { timeoutMs: 5000, nothrow: true });
  const args = r.code === 0 ? r.stdout.trim() : "";
  return { startMs: Date.parse(token), argv: args ? args.split(" ") : null, token };
}

/**
 * Whether a process's argv is the job's: equal, or ending with the job's argv where the
 * program may appear as a full path (`cargo` run as `/usr/bin/cargo`) and an interpreter may
 * come first (a `#!` script shows as `/bin/sh ./build.sh`).
 */
export function argvMatches(proc: string[], argv: string[]): boolean {
  const k = proc.length - argv.length;
  if (k < 0 || argv.length === 0) return false;
  if (basename(proc[k] ?? "") !== basename(argv[0] ?? "")) return false;
  return argv.every((a, i) => i === 0 || proc[k + i] === a);
}

/** The verdict on a job recorded as running: adopt it (with its start-time token) or record it lost, and why. */
export type Liveness = { alive: true; token: string } | { alive: false; why: string };

/**
 * A job recorded as running is adopted only when its pid is provably the job: alive, started
 * within `toleranceMs` of `started_at_ms`, and running the job's argv. Anything less is `lost`:
 * planter must never signal a process that is not the job.
 */
export function liveness(
  job: Pick<LegacyJobFile, "pid" | "started_at_ms" | "command">,
  toleranceMs = START_TOLERANCE_MS,
  facts: (pid: number) => ProcessFacts | null = processFacts,
): Liveness {
  if (!job.pid) return { alive: false, why: "recorded running without a pid, so whether it still runs is unknowable" };
  const f = facts(job.pid);
  if (!f) return { alive: false, why: `recorded running, but pid ${job.pid} is gone; its exit code is unknowable` };
  const drift = Math.abs(f.startMs - job.started_at_ms);
  if (drift > toleranceMs) {
    return {
      alive: false,
      why:
        `recorded running, but pid ${job.pid} now belongs to another process (started ${new Date(f.startMs).toISOString()}, ` +
        `the job ${new Date(job.started_at_ms).toISOString()}); the job itself is gone`,
    };
  }
  if (f.argv === null || !argvMatches(f.argv, job.command.argv)) {
    return {
      alive: false,
      why:
        `pid ${job.pid} is alive and started with the job, but runs ${f.argv === null ? "an unreadable command" : JSON.stringify(f.argv)}, ` +
        "not the job's argv; planter does not adopt (or ever signal) a process it cannot prove is the job",
    };
  }
  return { alive: true, token: f.token };
}
