/** The jobs table. */
import type { Database } from "bun:sqlite";
import * as v from "valibot";
import {
  ENFORCEMENTS,
  type Enforcement,
  type Job,
  type JobState,
  Limits,
  type Reason,
  type RunAs,
  type SandboxMode,
  TtySize,
  type WorkspaceFinding,
} from "../api/contract.ts";
import type { EffectivePolicy } from "../sandbox/policy.ts";
import { AnyRecord, jsonColumn, StringArray, StringRecord } from "./json.ts";

/** A job row with its JSON columns decoded. */
export interface JobRow {
  seq: number;
  id: string;
  cell: string;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  limits: Limits;
  sandbox_mode: SandboxMode;
  sandbox_policy: EffectivePolicy | null;
  backend: string;
  sandbox_fallback: boolean;
  state: JobState;
  reason: Reason | null;
  exit_code: number | null;
  signal: string | null;
  message: string | null;
  pid: number | null;
  start_time: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  kill_signal: string | null;
  kill_force: boolean;
  kill_requested_at: number | null;
  kill_reason: Reason | null;
  request_ref: string | null;
  enforcement: Enforcement | null;
  /** The job's cgroup v2 group, when it has one. */
  cgroup: string | null;
  limit_hit: LimitHit | null;
  log_truncated: boolean;
  run_as: RunAs | null;
  workspace: WorkspaceFinding[];
  tty: TtySize | null;
  /** The job reads a pipe planterd writes (POST …/stdin), not /dev/null (lib/jobs/stdin.ts). */
  stdin: boolean;
}

const LogSizesSchema = v.object({ stdout: v.number(), stderr: v.number() });

/** The limit the monitor found exceeded: observed value, maximum, when; for the log, what to keep. */
export const LimitHit = v.object({
  limit: v.picklist(["timeout_ms", "max_rss_bytes", "max_log_bytes", "max_pids", "min_free_bytes"]),
  value: v.number(),
  max: v.number(),
  at: v.number(),
  keep: v.optional(LogSizesSchema),
});
export type LimitHit = v.InferOutput<typeof LimitHit>;

type RawJob = Omit<
  JobRow,
  | "argv"
  | "env"
  | "limits"
  | "sandbox_fallback"
  | "kill_force"
  | "sandbox_policy"
  | "limit_hit"
  | "log_truncated"
  | "run_as"
  | "workspace"
  | "tty"
  | "stdin"
> & {
  tty: string | null;
  stdin: number;
  run_as: string | null;
  workspace: string | null;
  sandbox_policy: string | null;
  argv: string;
  env: string;
  limits: string;
  sandbox_fallback: number;
  kill_force: number | null;
  limit_hit: string | null;
  log_truncated: number;
};

const LimitsLoose = v.looseObject(Limits.entries);
const isEnforcement = (e: string | null): e is Enforcement => ENFORCEMENTS.includes(e as Enforcement);

function decode(r: RawJob): JobRow {
  const where = `job ${r.id}`;
  return {
    ...r,
    argv: jsonColumn(StringArray, r.argv, `${where} argv`),
    env: jsonColumn(StringRecord, r.env, `${where} env`),
    limits: jsonColumn(LimitsLoose, r.limits, `${where} limits`),
    sandbox_fallback: r.sandbox_fallback === 1,
    kill_force: r.kill_force === 1,
    enforcement: isEnforcement(r.enforcement) ? r.enforcement : null,
    limit_hit: r.limit_hit === null ? null : jsonColumn(LimitHit, r.limit_hit, `${where} limit_hit`),
    log_truncated: r.log_truncated === 1,
    run_as: r.run_as ? (jsonColumn(AnyRecord, r.run_as, `${where} run_as`) as unknown as RunAs) : null,
    workspace: r.workspace
      ? (jsonColumn(v.array(AnyRecord), r.workspace, `${where} workspace`) as unknown as WorkspaceFinding[])
      : [],
    tty: r.tty ? jsonColumn(TtySize, r.tty, `${where} tty`) : null,
    stdin: r.stdin === 1,
    sandbox_policy:
      r.sandbox_policy === null
        ? null
        : ({
            unix_sockets: [],
            workspace_config: "protect",
            ...jsonColumn(AnyRecord, r.sandbox_policy, `${where} sandbox_policy`),
          } as unknown as EffectivePolicy),
  };
}

/** A new job id: `j-` + base36 milliseconds + 4 random base36 chars (sorts by creation time). */
export function newJobId(now = Date.now()): string {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0] ?? 0;
  return `j-${now.toString(36).padStart(9, "0")}${(rand % 36 ** 4).toString(36).padStart(4, "0")}`;
}

export type NewJob = Pick<
  JobRow,
  | "id"
  | "cell"
  | "argv"
  | "cwd"
  | "env"
  | "limits"
  | "sandbox_mode"
  | "sandbox_policy"
  | "backend"
  | "created_at"
  | "request_ref"
  | "tty"
  | "stdin"
>;

export function insertJob(db: Database, j: NewJob): void {
  db.query(
    `INSERT INTO jobs (id, cell, argv, cwd, env, limits, sandbox_mode, sandbox_policy, backend, state, created_at, request_ref, tty, stdin)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)`,
  ).run(
    j.id,
    j.cell,
    JSON.stringify(j.argv),
    j.cwd,
    JSON.stringify(j.env),
    JSON.stringify(j.limits),
    j.sandbox_mode,
    j.sandbox_policy === null ? null : JSON.stringify(j.sandbox_policy),
    j.backend,
    j.created_at,
    j.request_ref,
    j.tty === null ? null : JSON.stringify(j.tty),
    j.stdin ? 1 : 0,
  );
}

export function getJob(db: Database, id: string): JobRow | null {
  const r = db.query("SELECT * FROM jobs WHERE id = ?").get(id) as RawJob | null;
  return r ? decode(r) : null;
}

export interface JobFilter {
  cell?: string;
  state?: JobState;
  limit: number;
  /** The position to continue after, in the listing's order. */
  afterSeq?: number;
  /** Newest first (then `afterSeq` pages to older jobs); oldest first otherwise. */
  newest?: boolean;
}

export function listJobs(db: Database, f: JobFilter): JobRow[] {
  return [...iterJobs(db, f)];
}

/** `listJobs` row by row: a caller that stops early (a page full by bytes) never reads the rest. */
export function* iterJobs(db: Database, f: JobFilter): Generator<JobRow> {
  const where: string[] = [];
  const params: (string | number)[] = [];
  if (f.cell) {
    where.push("cell = ?");
    params.push(f.cell);
  }
  if (f.state) {
    where.push("state = ?");
    params.push(f.state);
  }
  if (f.afterSeq !== undefined) {
    where.push(f.newest ? "seq < ?" : "seq > ?");
    params.push(f.afterSeq);
  }
  params.push(f.limit);
  // Either order walks an index (seq, or cell/state then seq) from one end: the newest 50 of
  // 100k jobs cost as little as the oldest 50.
  const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq ${f.newest ? "DESC" : "ASC"} LIMIT ?`;
  for (const row of db.query(sql).iterate(...params)) yield decode(row as RawJob);
}

/** Jobs that a daemon must supervise: pending or running. */
export function liveJobs(db: Database, cell?: string): JobRow[] {
  const rows = cell
    ? db.query("SELECT * FROM jobs WHERE state IN ('pending','running') AND cell = ? ORDER BY seq").all(cell)
    : db.query("SELECT * FROM jobs WHERE state IN ('pending','running') ORDER BY seq").all();
  return (rows as RawJob[]).map(decode);
}

/** Jobs that ended while planter still holds a cgroup for them (removal pending); through jobs_cgroup, not every row. */
export function endedWithCgroup(db: Database): { id: string; cgroup: string }[] {
  return db
    .query("SELECT id, cgroup FROM jobs WHERE cgroup IS NOT NULL AND state NOT IN ('pending','running')")
    .all() as { id: string; cgroup: string }[];
}

/** The job's cgroup is gone: forget it. */
export function clearCgroup(db: Database, id: string): void {
  db.query("UPDATE jobs SET cgroup = NULL WHERE id = ?").run(id);
}

/**
 * Record, before its spawn, how a pending job is launched: a planterd restarted after a crash
 * between spawn and `markRunning` adopts the job with these facts (see lib/jobs/claim.ts).
 */
export function markLaunching(
  db: Database,
  id: string,
  fallback: boolean,
  enforcement: Enforcement,
  cgroup: string | null,
  runAs: RunAs | null,
): void {
  db.query(
    `UPDATE jobs SET sandbox_fallback = ?, enforcement = ?, cgroup = ?, run_as = ? WHERE id = ? AND state = 'pending'`,
  ).run(fallback ? 1 : 0, enforcement, cgroup, runAs ? JSON.stringify(runAs) : null, id);
}

export function markRunning(
  db: Database,
  id: string,
  pid: number,
  startTime: string | null,
  fallback: boolean,
  at: number,
  enforcement: Enforcement = "monitor",
  cgroup: string | null = null,
  runAs: RunAs | null = null,
): void {
  db.query(
    `UPDATE jobs SET state = 'running', pid = ?, start_time = ?, sandbox_fallback = ?, started_at = ?, enforcement = ?, cgroup = ?, run_as = ?
     WHERE id = ? AND state = 'pending'`,
  ).run(pid, startTime, fallback ? 1 : 0, at, enforcement, cgroup, runAs ? JSON.stringify(runAs) : null, id);
}

/** Record what the workspace review set aside after a job. */
export function markWorkspace(db: Database, id: string, findings: WorkspaceFinding[]): void {
  db.query("UPDATE jobs SET workspace = ? WHERE id = ?").run(JSON.stringify(findings), id);
}

/** Record the limit a running job exceeded; the first one recorded stays. Returns false otherwise. */
export function markLimitHit(db: Database, id: string, hit: LimitHit): boolean {
  const r = db
    .query("UPDATE jobs SET limit_hit = ? WHERE id = ? AND state = 'running' AND limit_hit IS NULL")
    .run(JSON.stringify(hit), id);
  return r.changes === 1;
}

/** Record that a job's log holds less than it wrote (cut to max_log_bytes). */
export function markLogTruncated(db: Database, id: string): void {
  db.query("UPDATE jobs SET log_truncated = 1 WHERE id = ?").run(id);
}

/** Record a kill: the first reason stays (a limit breach is not renamed by a later user kill). */
export function markKillRequested(
  db: Database,
  id: string,
  signal: string,
  force: boolean,
  reason: Reason,
  at: number,
): void {
  db.query(
    `UPDATE jobs SET kill_signal = ?, kill_force = MAX(COALESCE(kill_force, 0), ?),
       kill_requested_at = COALESCE(kill_requested_at, ?), kill_reason = COALESCE(kill_reason, ?) WHERE id = ?`,
  ).run(signal, force ? 1 : 0, at, reason, id);
}

export interface Finish {
  state: JobState;
  reason: Reason;
  exit_code: number | null;
  signal: string | null;
  message: string | null;
  at: number;
}

/** Record the end of a job once: returns false when it had already ended (first writer wins). */
export function markFinished(db: Database, id: string, f: Finish): boolean {
  const r = db
    .query(
      `UPDATE jobs SET state = ?, reason = ?, exit_code = ?, signal = ?, message = ?, finished_at = ?
       WHERE id = ? AND state IN ('pending','running')`,
    )
    .run(f.state, f.reason, f.exit_code, f.signal, f.message, f.at, id);
  return r.changes === 1;
}

export function deleteJob(db: Database, id: string): void {
  db.query("DELETE FROM jobs WHERE id = ?").run(id);
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The API view of a job. */
export function jobView(j: JobRow): Job {
  return {
    id: j.id,
    cell: j.cell,
    argv: j.argv,
    cwd: j.cwd,
    env: j.env,
    state: j.state,
    reason: j.reason,
    exit_code: j.exit_code,
    signal: j.signal,
    message: j.message,
    pid: j.pid,
    created_at: new Date(j.created_at).toISOString(),
    started_at: iso(j.started_at),
    finished_at: iso(j.finished_at),
    limits: j.limits,
    enforcement: j.enforcement,
    limit_exceeded: j.limit_hit
      ? {
          limit: j.limit_hit.limit,
          value: j.limit_hit.value,
          max: j.limit_hit.max,
          at: new Date(j.limit_hit.at).toISOString(),
        }
      : null,
    log_truncated: j.log_truncated,
    sandbox: { mode: j.sandbox_mode, backend: j.backend, fallback: j.sandbox_fallback, policy: j.sandbox_policy },
    kill:
      j.kill_requested_at === null
        ? null
        : {
            signal: j.kill_signal ?? "TERM",
            force: j.kill_force,
            requested_at: new Date(j.kill_requested_at).toISOString(),
          },
    request_ref: j.request_ref,
    run_as: j.run_as,
    workspace: j.workspace,
    tty: j.tty,
    // Whether it is still open is the job dir's to say (the handler looks): here, while the job lives.
    stdin: j.stdin ? { open: j.state === "pending" || j.state === "running" } : null,
  };
}
