/**
 * Limit decisions as pure functions of a sample: which limit a job has exceeded, how much of
 * an over-quota log to keep, and when a job that ignores SIGTERM is killed before its grace ends.
 */
import type { Limits, Reason } from "../api/contract.ts";

/** A limit's name as it appears in `limits`. */
export type LimitName = keyof Limits;

/** The termination reason each limit records. */
export const LIMIT_REASON = {
  timeout_ms: "timeout",
  max_rss_bytes: "memory_limit",
  max_log_bytes: "log_quota",
  max_pids: "process_limit",
} as const satisfies Record<LimitName, Reason>;

/** The log reserve on the state disk (`[logs] min_free_bytes`): a job printing below it is stopped. */
export const RESERVE_LIMIT = "min_free_bytes";

/** Reasons that name a limit (their kills use the monitor's grace). */
export const LIMIT_REASONS: ReadonlySet<Reason> = new Set([...Object.values(LIMIT_REASON), "disk_full"]);

/** What the monitor measured of one job at one moment; null where it did not measure. */
export interface Sample {
  now: number;
  startedAt: number;
  /** RSS summed over the job's tree, bytes. */
  rssBytes: number | null;
  /** stdout + stderr, bytes. */
  logBytes: number | null;
  /** Processes and threads of the job's tree, or forks its cgroup refused (then past the limit). */
  tasks?: number | null;
}

/** A limit found exceeded, with the observed value. */
export interface Breach {
  limit: LimitName | typeof RESERVE_LIMIT;
  reason: Reason;
  value: number;
  max: number;
}

/**
 * The limit a sample exceeds, or null. A timeout is reached at `timeout_ms` exactly; memory
 * log and process limits are exceeded when the value is above the maximum. When one sample
 * finds several, the timeout (whose moment is known exactly) is named first, then memory, log,
 * processes.
 */
export function breach(limits: Limits, s: Sample): Breach | null {
  const elapsed = s.now - s.startedAt;
  if (limits.timeout_ms !== undefined && elapsed >= limits.timeout_ms) {
    return { limit: "timeout_ms", reason: "timeout", value: elapsed, max: limits.timeout_ms };
  }
  if (limits.max_rss_bytes !== undefined && s.rssBytes !== null && s.rssBytes > limits.max_rss_bytes) {
    return { limit: "max_rss_bytes", reason: "memory_limit", value: s.rssBytes, max: limits.max_rss_bytes };
  }
  if (limits.max_log_bytes !== undefined && s.logBytes !== null && s.logBytes > limits.max_log_bytes) {
    return { limit: "max_log_bytes", reason: "log_quota", value: s.logBytes, max: limits.max_log_bytes };
  }
  if (limits.max_pids !== undefined && s.tasks != null && s.tasks > limits.max_pids) {
    return { limit: "max_pids", reason: "process_limit", value: s.tasks, max: limits.max_pids };
  }
  return null;
}

/** Sizes of a job's two log files. */
export interface LogSizes {
  stdout: number;
  stderr: number;
}

/**
 * How many bytes of each log to keep so that together they hold exactly `max`, the first bytes
 * written. `under` is the last sample seen within the quota, `over` the sizes now: what both
 * held at `under` is kept, and the rest of the quota is shared in proportion to what each grew
 * since. Bytes are only ever dropped from the end of a file.
 */
export function quotaCut(under: LogSizes, over: LogSizes, max: number): LogSizes {
  if (over.stdout + over.stderr <= max) return { ...over };
  const base = {
    stdout: Math.min(under.stdout, over.stdout),
    stderr: Math.min(under.stderr, over.stderr),
  };
  if (base.stdout + base.stderr > max) return quotaCut({ stdout: 0, stderr: 0 }, over, max);
  const room = max - base.stdout - base.stderr;
  const grewOut = over.stdout - base.stdout;
  const grewErr = over.stderr - base.stderr;
  let out = Math.min(grewOut, Math.floor((room * grewOut) / (grewOut + grewErr)));
  let err = Math.min(grewErr, room - out);
  // Rounding may leave a byte of room: give it to whichever file still has bytes.
  const left = room - out - err;
  if (left > 0) {
    const more = Math.min(left, grewOut - out);
    out += more;
    err += Math.min(left - more, grewErr - err);
  }
  return { stdout: base.stdout + out, stderr: base.stderr + err };
}

/** What the monitor does about a breach it found: stop the job, or leave an end that came first. */
export type ActDecision = "stop" | "ended" | "stopping";

/**
 * Whether a breach may still stop the job. The job's exit status being recorded, or its
 * recorder gone, means it ended on its own before the monitor acted: that end stands ("ended").
 * A kill under way keeps its own reason ("stopping").
 */
export function decideAct(j: {
  exitRecorded: boolean;
  recorderAlive: boolean;
  running: boolean;
  killRequested: boolean;
}): ActDecision {
  if (j.exitRecorded || !j.recorderAlive || !j.running) return "ended";
  return j.killRequested ? "stopping" : "stop";
}

/** Log bytes a job may write past its quota during the grace before it gets SIGKILL at once. */
export const LOG_GRACE_BYTES = 1024 * 1024;

/**
 * During the grace after a limit kill, the value past which the monitor sends SIGKILL without
 * waiting: 1 MiB more log, or another `max` of memory, than the sample that found the breach.
 * A timeout has no such cap.
 */
export function hardCap(b: Pick<Breach, "limit" | "max" | "value">): number | null {
  if (b.limit === "max_log_bytes") return b.value + LOG_GRACE_BYTES;
  if (b.limit === "max_rss_bytes") return b.value + b.max;
  return null;
}
