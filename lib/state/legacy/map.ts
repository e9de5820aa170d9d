import * as v from "valibot";
import { CELL_NAME_RE, type JobState, Limits, type Reason } from "../../api/contract.ts";
import { signalName } from "../../jobs/proc.ts";
// ---------------------------------------------------------------------------------------------
// Cells

/**
 * A valid planter cell name for a legacy `spec.name`: lowercased, runs of other characters
 * turned into `-`, leading punctuation dropped, at most 63 characters; the legacy id when
 * nothing is left.
 */
export function cellNameFor(name: string, legacyId: string): string {
  if (CELL_NAME_RE.test(name)) return name;
  const cleaned = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+/, "")
    .slice(0, 63)
    .replace(/-+$/, "");
  return CELL_NAME_RE.test(cleaned) ? cleaned : legacyId;
}

/** `name-legacy`, then `name-legacy-2`, … : the first that `taken` does not hold. */
export function freeName(name: string, taken: (n: string) => boolean): string {
  for (let n = 1; ; n++) {
    const suffix = n === 1 ? "-legacy" : `-legacy-${n}`;
    const candidate = `${name.slice(0, 63 - suffix.length).replace(/[-._]+$/, "")}${suffix}`;
    if (!taken(candidate)) return candidate;
  }
}

// ---------------------------------------------------------------------------------------------
// Jobs: outcome of a finished legacy job

const LIMIT_OR_KILL: ReadonlySet<Reason> = new Set([
  "terminated_by_user",
  "forced_kill",
  "timeout",
  "memory_limit",
  "log_quota",
]);

/** Legacy termination reasons (and likely spellings) → planter reasons. */
const REASON_ALIASES: Record<string, Reason> = {
  exited: "exited",
  exit: "exited",
  completed: "exited",
  finished: "exited",
  terminated_by_user: "terminated_by_user",
  killed: "terminated_by_user",
  killed_by_user: "terminated_by_user",
  user_kill: "terminated_by_user",
  user: "terminated_by_user",
  terminated: "terminated_by_user",
  cancelled: "terminated_by_user",
  canceled: "terminated_by_user",
  forced_kill: "forced_kill",
  force_kill: "forced_kill",
  force_killed: "forced_kill",
  sigkill: "forced_kill",
  timeout: "timeout",
  timed_out: "timeout",
  time_limit: "timeout",
  memory_limit: "memory_limit",
  oom: "memory_limit",
  out_of_memory: "memory_limit",
  oom_killed: "memory_limit",
  log_quota: "log_quota",
  log_limit: "log_quota",
  output_limit: "log_quota",
  sandbox_error: "sandbox_error",
  spawn_error: "spawn_error",
  spawn_failed: "spawn_error",
  failed_to_start: "spawn_error",
  lost: "lost",
};

/** The planter reason for a legacy `termination_reason`, or null when there is none. */
export function mapReason(reason: string): Reason | null {
  return (
    REASON_ALIASES[
      reason
        .trim()
        .toLowerCase()
        .replace(/[\s-]+/g, "_")
    ] ?? null
  );
}

/** How a finished legacy job is recorded in planter. */
export interface Outcome {
  state: JobState;
  reason: Reason;
  exit_code: number | null;
  signal: string | null;
  message: string | null;
}

/**
 * The outcome of a job the prototype recorded as exited, like planter's own: code 0 →
 * `exited`, another code → `failed` (reason `exited`); a kill or limit reason → `killed` with
 * that reason; spawn and sandbox errors → `failed` with theirs. An unknown reason is kept in
 * the message.
 */
export function exitedOutcome(code: number | null, termination: string | null | undefined): Outcome {
  const mapped = termination ? mapReason(termination) : null;
  const note = termination && !mapped ? `legacy termination_reason ${JSON.stringify(termination)}` : null;
  const sig = code !== null && code > 128 ? signalName(code - 128) : null;
  if (mapped && LIMIT_OR_KILL.has(mapped)) {
    return { state: "killed", reason: mapped, exit_code: code, signal: sig, message: note };
  }
  if (mapped === "spawn_error" || mapped === "sandbox_error") {
    return { state: "failed", reason: mapped, exit_code: code, signal: null, message: note };
  }
  if (mapped === "lost") {
    return { state: "lost", reason: "lost", exit_code: code, signal: null, message: "the prototype lost this job" };
  }
  if (code === null) {
    return {
      state: "failed",
      reason: "exited",
      exit_code: null,
      signal: null,
      message: note ?? "the prototype recorded no exit code (the job was probably killed by a signal)",
    };
  }
  return { state: code === 0 ? "exited" : "failed", reason: "exited", exit_code: code, signal: null, message: note };
}

/** The legacy limits planter understands (timeout_ms, max_rss_bytes, max_log_bytes with valid values). */
export function importLimits(raw: Record<string, unknown> | null | undefined): Limits {
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(raw ?? {})) {
    if (val === null || val === undefined) continue;
    if (v.safeParse(Limits, { [k]: val }).success) out[k] = val;
  }
  return out as Limits;
}

export function droppedLimits(raw: Record<string, unknown> | null | undefined): string[] {
  const kept = importLimits(raw);
  return Object.entries(raw ?? {})
    .filter(([k, val]) => val !== null && val !== undefined && !(k in kept))
    .map(([k]) => k);
}

/** Where a legacy job's stream log is: `logs/<id>.<stream>.log` in the tree, else its recorded path. */
