/** Human units for limits: parse `30s`, `512M`, `10MiB` on the command line; print `812 MiB`, `30.2s`. */
import type { ArgDef } from "citty";
import { type Job, type Limits, MAX_BYTES, MAX_DURATION_MS, MAX_PIDS } from "../api/contract.ts";
import { LIMIT_REASON } from "../jobs/limits.ts";
import { usage } from "./args.ts";

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const BYTE_UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * A limit duration: a number with a unit, ms s m h d (`30s`, `1.5h`). A bare number is refused:
 * `--timeout 30` could mean seconds or milliseconds. More than 0 and at most 30 days.
 */
export function parseLimitDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/i.exec(text.trim());
  if (!m) {
    const hint = /^\d+(\.\d+)?$/.test(text.trim()) ? `; add a unit, e.g. ${text.trim()}s` : "";
    throw usage(`${what} must be a duration like 500ms, 30s, 5m, 2h or 1d, not ${JSON.stringify(text)}${hint}`);
  }
  const ms = Math.round(Number(m[1]) * (DURATION_UNITS[(m[2] as string).toLowerCase()] as number));
  if (ms < 1) throw usage(`${what} must be more than 0, not ${JSON.stringify(text)}`);
  if (ms > MAX_DURATION_MS) throw usage(`${what} is at most 30d, not ${JSON.stringify(text)}`);
  return ms;
}

/**
 * A size in bytes: a number with an optional unit K M G T (also KB KiB, MB MiB…: every unit is
 * a power of 1024, as in systemd and docker). More than 0 and at most 1 PiB.
 */
export function parseBytes(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|(b))?$/i.exec(text.trim());
  if (!m) throw usage(`${what} must be a size like 512M, 10MiB, 2G or 4096, not ${JSON.stringify(text)}`);
  const unit = (m[2] ?? m[3] ?? "").toLowerCase();
  const bytes = Math.round(Number(m[1]) * (BYTE_UNITS[unit] as number));
  if (bytes < 1) throw usage(`${what} must be more than 0 bytes, not ${JSON.stringify(text)}`);
  if (bytes > MAX_BYTES) throw usage(`${what} is at most 1024T (1 PiB), not ${JSON.stringify(text)}`);
  return bytes;
}

/** A count of processes: a whole number, more than 0 and at most the kernel's pid ceiling. */
export function parseCount(text: string, what: string): number {
  if (!/^\d+$/.test(text.trim())) throw usage(`${what} must be a whole number like 256, not ${JSON.stringify(text)}`);
  const n = Number(text.trim());
  if (n < 1) throw usage(`${what} must be more than 0, not ${JSON.stringify(text)}`);
  if (n > MAX_PIDS) throw usage(`${what} is at most ${MAX_PIDS}, not ${JSON.stringify(text)}`);
  return n;
}

/** `812 MiB`, `1.5 GiB`, `900 B`: binary units, at most one decimal. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = i === 0 || v >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1).replace(/\.0$/, "");
  return `${text} ${units[i]}`;
}

/** `250ms`, `30.2s`, `5m`, `2h 30m`, `1d 2h`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1).replace(/\.0$/, "")}s`;
  const two = (big: number, bigUnit: string, small: number, smallUnit: string) => {
    const a = Math.floor(ms / big);
    const b = Math.floor((ms % big) / small);
    return b ? `${a}${bigUnit} ${b}${smallUnit}` : `${a}${bigUnit}`;
  };
  if (ms < 3_600_000) {
    const s = Math.round((ms % 60_000) / 1000);
    return s ? `${Math.floor(ms / 60_000)}m ${s}s` : `${Math.floor(ms / 60_000)}m`;
  }
  if (ms < 86_400_000) return two(3_600_000, "h", 60_000, "m");
  return two(86_400_000, "d", 3_600_000, "h");
}

/** A limit's value in words: a duration for the timeout, a size otherwise. */
export function limitValue(limit: keyof Limits, n: number): string {
  if (limit === "max_pids") return `${n} processes`;
  return limit === "timeout_ms" ? formatDuration(n) : formatBytes(n);
}

/** "timeout 30s, memory 512 MiB, log 10 MiB", or "none". */
export function limitsLine(l: Limits): string {
  const parts: string[] = [];
  if (l.timeout_ms !== undefined) parts.push(`timeout ${formatDuration(l.timeout_ms)}`);
  if (l.max_rss_bytes !== undefined) parts.push(`memory ${formatBytes(l.max_rss_bytes)}`);
  if (l.max_log_bytes !== undefined) parts.push(`log ${formatBytes(l.max_log_bytes)}`);
  if (l.max_pids !== undefined) parts.push(`processes ${l.max_pids}`);
  return parts.length ? parts.join(", ") : "none";
}

/** "memory_limit: 812 MiB > 512 MiB" for a job that a limit (or the disk's log reserve) ended; null otherwise. */
export function limitText(j: Pick<Job, "limit_exceeded">): string | null {
  const x = j.limit_exceeded;
  if (!x) return null;
  if (x.limit === "min_free_bytes") {
    return `disk_full: ${formatBytes(x.value)} free < ${formatBytes(x.max)} reserved on the state disk ([logs] min_free_bytes)`;
  }
  const reason = LIMIT_REASON[x.limit];
  // Elapsed time to the millisecond below a minute: "1s > 1s" would say nothing.
  const value =
    x.limit === "timeout_ms" && x.value < 60_000
      ? `${(x.value / 1000).toFixed(3).replace(/\.?0+$/, "")}s`
      : limitValue(x.limit, x.value);
  return `${reason}: ${value} > ${limitValue(x.limit, x.max)}`;
}

/** --timeout, --max-rss, --max-log, --max-pids for `run` and `cell create`. */
export const limitArgs = {
  timeout: {
    type: "string",
    description: "kill the job's tree after this long: 500ms, 30s, 5m, 2h, 1d",
    valueHint: "DURATION",
  },
  "max-rss": {
    type: "string",
    description: "kill the job's tree when its processes' memory (RSS, summed) passes this: 512M, 2G",
    valueHint: "SIZE",
  },
  "max-log": {
    type: "string",
    description: "kill the job's tree when stdout + stderr pass this (the log keeps this much): 10M",
    valueHint: "SIZE",
  },
  "max-pids": {
    type: "string",
    description: "kill the job's tree when it needs more processes and threads than this at once: 256",
    valueHint: "N",
  },
} as const satisfies Record<string, ArgDef>;

/** The limits given with --timeout, --max-rss, --max-log, --max-pids, or undefined when none was. */
export function limitsFromArgs(args: {
  timeout?: string;
  "max-rss"?: string;
  "max-log"?: string;
  "max-pids"?: string;
}): Limits | undefined {
  const limits: Limits = {};
  if (args.timeout !== undefined) limits.timeout_ms = parseLimitDuration(args.timeout, "--timeout");
  if (args["max-rss"] !== undefined) limits.max_rss_bytes = parseBytes(args["max-rss"], "--max-rss");
  if (args["max-log"] !== undefined) limits.max_log_bytes = parseBytes(args["max-log"], "--max-log");
  if (args["max-pids"] !== undefined) limits.max_pids = parseCount(args["max-pids"], "--max-pids");
  return Object.keys(limits).length ? limits : undefined;
}
