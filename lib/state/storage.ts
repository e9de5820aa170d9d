/**
 * The disk under planter's state: how much is free, the reserve below which jobs' logs stop,
 * and what a failed write (SQLITE_FULL, SQLITE_IOERR, ENOSPC) means to a user.
 */
import { existsSync, statfsSync } from "node:fs";
import { dirname } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { formatBytes } from "../cli/units.ts";

/** Free and total bytes of the filesystem holding a directory (null when it cannot be measured). */
export interface DiskSpace {
  path: string;
  free: number;
  total: number;
}

/** The log reserve when `[logs] min_free_bytes` is unset: 64 MiB, or 5 % of a smaller filesystem. */
export const DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_RESERVE_FRACTION = 0.05;

/** The nearest existing directory at or above `dir` (statfs needs one). */
function existing(dir: string): string {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/** statfs of the filesystem holding `dir` (free: what an unprivileged writer may use). */
export function diskSpace(dir: string): DiskSpace | null {
  const path = existing(dir);
  try {
    const s = statfsSync(path);
    return { path, free: s.bavail * s.bsize, total: s.blocks * s.bsize };
  } catch {
    return null;
  }
}

/** The reserve in bytes: the configured one, else the default for a filesystem of `total` bytes. */
export function reserveBytes(configured: number | undefined, total: number): number {
  if (configured !== undefined) return configured;
  return Math.min(DEFAULT_RESERVE_BYTES, Math.floor(total * DEFAULT_RESERVE_FRACTION));
}

/** "3 MiB free of 24 MiB on /var/lib/planter". */
export function spaceText(d: DiskSpace): string {
  return `${formatBytes(d.free)} free of ${formatBytes(d.total)} on ${d.path}`;
}

const FULL_ERRNO = new Set(["ENOSPC", "EDQUOT"]);

/** Which storage fault an error is: the disk is full, an I/O error, or neither (null). */
export function storageFault(e: unknown): "full" | "io" | null {
  const err = e as { code?: unknown; name?: unknown } | null;
  const code = typeof err?.code === "string" ? err.code : "";
  if (code === "SQLITE_FULL" || FULL_ERRNO.has(code)) return "full";
  if (code.startsWith("SQLITE_IOERR") || code === "EIO") return "io";
  return null;
}

/**
 * The API error for a write that failed on the state disk (E_UNAVAILABLE, with what is full and
 * how much is free), or null when `e` is no storage fault.
 */
export function storageError(e: unknown, stateDir: string): PlanterError | null {
  if (e instanceof PlanterError) return null;
  const fault = storageFault(e);
  if (!fault) return null;
  const code = String((e as { code: string }).code);
  const d = diskSpace(stateDir);
  const where = d ? spaceText(d) : stateDir;
  const details = { fault: fault === "full" ? "disk_full" : "io_error", code, path: d?.path ?? stateDir };
  if (fault === "full") {
    return new PlanterError("E_UNAVAILABLE", `planterd cannot write its state: the disk is full (${where})`, {
      hint:
        "free space there (`planter job rm ID` removes a finished job and its logs); " +
        "planterd records what it could not write as soon as it can write again",
      details: { ...details, free_bytes: d?.free ?? null, total_bytes: d?.total ?? null },
      cause: e,
    });
  }
  return new PlanterError("E_UNAVAILABLE", `planterd cannot write its state: I/O error (${code}) on ${where}`, {
    hint: "the disk under the state dir is failing or went away; see `dmesg` and planterd's log, then restart planterd",
    details,
    cause: e,
  });
}
