/**
 * A job history written straight into a state dir through planter's own state module, before a
 * planterd starts on it: thousands of finished jobs in seconds, where running them would take
 * minutes. Used by tests of long listings and by the benchmarks of a 100k-job state.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { JobState } from "../lib/api/contract.ts";
import { jobDir, stateFiles } from "../lib/paths.ts";
import { openState } from "../lib/state/db.ts";
import { appendEvent } from "../lib/state/events.ts";
import { insertJob, markFinished, newJobId } from "../lib/state/jobs.ts";

export interface SeedOptions {
  /** The cell of job i (default: "default"). */
  cell?: (i: number) => string;
  /** The end of job i (default: exited 0, one in seven failed 2). */
  state?: (i: number) => JobState;
  /** Jobs whose dirs (stdout, stderr, exit) are made: the newest this many (default 50). */
  dirs?: number;
}

/**
 * Write `count` finished jobs, one second apart and ending now, with a `job.finished` event each
 * (what a real history holds, up to the default `[events] retain`), into the database of
 * `stateDir` (created, or appended to). Returns their ids, oldest first.
 */
export function seedJobs(stateDir: string, count: number, opts: SeedOptions = {}): string[] {
  const files = stateFiles(stateDir);
  mkdirSync(files.jobs, { recursive: true, mode: 0o700 });
  const db = openState(files.db);
  const ids: string[] = [];
  const codes: (number | null)[] = [];
  const base = Date.now() - count * 1000;
  try {
    db.transaction(() => {
      for (let i = 0; i < count; i++) {
        const at = base + i * 1000;
        const id = newJobId(at);
        const cell = opts.cell?.(i) ?? "default";
        const state = opts.state?.(i) ?? (i % 7 === 6 ? "failed" : "exited");
        const code = state === "failed" ? 2 : state === "exited" ? 0 : null;
        insertJob(db, {
          id,
          cell,
          argv: ["make", "-j4", "test", `N=${i}`],
          tty: null,
          stdin: false,
          cwd: "/tmp",
          env: { PATH: "/usr/bin:/bin", HOME: "/tmp", PLANTER_JOB_ID: id, PLANTER_CELL: cell },
          limits: { max_log_bytes: 1024 ** 3, max_pids: 4096 },
          sandbox_mode: "disabled",
          sandbox_policy: null,
          backend: "none",
          created_at: at,
          request_ref: null,
        });
        const reason = state === "killed" ? "terminated_by_user" : state === "lost" ? "lost" : "exited";
        markFinished(db, id, { state, reason, exit_code: code, signal: null, message: null, at: at + 500 });
        appendEvent(db, "job.finished", `job/${id}`, { state, reason, exit_code: code }, at + 500);
        ids.push(id);
        codes.push(code);
      }
    }).immediate();
  } finally {
    db.close();
  }
  const dirs = Math.min(ids.length, opts.dirs ?? 50);
  for (let i = ids.length - dirs; i < ids.length; i++) {
    const dir = jobDir(stateDir, ids[i] as string);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, "stdout"), "", { mode: 0o600 });
    writeFileSync(join(dir, "stderr"), "", { mode: 0o600 });
    const code = codes[i];
    if (code !== null && code !== undefined) writeFileSync(join(dir, "exit"), `${code}\n`, { mode: 0o600 });
  }
  return ids;
}
