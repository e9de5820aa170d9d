/**
 * Who began a pending job: its recorder, or a restarted planterd that gave it up. A planterd
 * killed between spawning a job and recording it `running` leaves the row `pending`; the job dir's
 * `pid` file says what happened. The recorder's first act creates that file exclusively and
 * writes its pid; a restarted planterd creates it first where it can ("abandoned", atomically
 * with link(2)), so a recorder still on its way exits without running anything. One of the two
 * creates the file, never both: the job either ran and is adopted, or never ran at all.
 */
import { closeSync, linkSync, openSync, readFileSync, rmSync, statSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { execSync } from "../host/exec.ts";
import { listPids, procText, startTime } from "./proc.ts";
import { jobFiles, WARM_TOKEN_FILE } from "./recorder.ts";

const ABANDONED = "abandoned";

/** What the pid file of a pending job says, once planterd has claimed it if it could. */
export type Start =
  | { started: false; why: string }
  /** `start` is null when the recorder is gone (the job ended while planterd was down). */
  | { started: true; pid: number; start: string | null; at: number };

/**
 * Settle a pending job left by a previous planterd: claim its start (then it never ran, and a
 * recorder that comes later runs nothing) or find the recorder that claimed it first.
 */
export function settleStart(dir: string): Start {
  const files = jobFiles(dir);
  const claimed = claim(files.pid);
  if (claimed === "no dir") return { started: false, why: "planterd stopped before preparing it" };
  if (claimed === "claimed") return { started: false, why: "planterd stopped before starting it" };
  let pid = readPid(files.pid);
  if (pid === ABANDONED) return { started: false, why: "an earlier planterd gave it up before it started" };
  if (pid === null) {
    // The recorder made the file and is about to write its pid (or died in between: the job never ran).
    const found = findRecorder(files.status);
    if (found) return { started: true, ...found, at: mtime(files.pid) };
    pid = readPid(files.pid);
    if (pid === null || pid === ABANDONED) {
      return { started: false, why: "its recorder was killed before starting it" };
    }
  }
  return { started: true, pid, start: recorderStart(pid, files.status), at: mtime(files.pid) };
}

/** Create `file` holding "abandoned" in one step, unless it exists. */
function claim(file: string): "claimed" | "taken" | "no dir" {
  const tmp = `${file}.${process.pid}`;
  let fd = -1;
  try {
    fd = openSync(tmp, "w", 0o600);
    writeSync(fd, `${ABANDONED}\n`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "no dir";
    throw e;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  try {
    linkSync(tmp, file);
    return "claimed";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return "taken";
    throw e;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** The pid in a pid file, "abandoned", or null while it is empty or partly written. */
function readPid(file: string): number | typeof ABANDONED | null {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return null;
  }
  if (text === `${ABANDONED}\n`) return ABANDONED;
  return /^[1-9]\d{0,9}\n$/.test(text) ? Number(text) : null;
}

function mtime(file: string): number {
  try {
    return Math.floor(statSync(file).mtimeMs);
  } catch {
    return Date.now();
  }
}

/**
 * Whether live process `pid` is the recorder of the job whose status file is `status`: its command
 * line names that file (recorderArgv), or, for a warm recorder (made before its job was known),
 * the token its dir holds (warmRecorderArgv; lib/jobs/warm.ts).
 */
function recordsTo(pid: number, status: string): boolean {
  const token = warmToken(dirname(status));
  if (process.platform !== "linux") {
    const r = execSync("ps", ["-o", "args=", "-p", String(pid)], { timeoutMs: 5000, nothrow: true });
    const args = `${r.stdout.trim()} `;
    return (
      r.code === 0 &&
      (args.includes(` planter-job ${status} `) || (token !== null && args.includes(` planter-warm ${token} `)))
    );
  }
  const cmd = procText(pid, "cmdline");
  if (cmd === null) return false;
  return cmd.includes(`\0planter-job\0${status}\0`) || (token !== null && cmd.includes(`\0planter-warm\0${token}\0`));
}

/** The token of the warm recorder a job dir was made for, or null (a recorder started for the job). */
function warmToken(dir: string): string | null {
  try {
    const t = readFileSync(join(dir, WARM_TOKEN_FILE), "utf8").trim();
    return /^[a-z0-9]{8,40}$/.test(t) ? t : null;
  } catch {
    return null;
  }
}

/**
 * The start time of `pid` if it is still this job's recorder, else null (it ended, and the pid
 * may now be another process's). Read twice around the check: a pid reused in between differs.
 */
function recorderStart(pid: number, status: string): string | null {
  const before = startTime(pid);
  if (before === null || !recordsTo(pid, status)) return null;
  return startTime(pid) === before ? before : null;
}

/** The live recorder of a job, found by its command line (Linux: /proc; elsewhere none). */
function findRecorder(status: string): { pid: number; start: string } | null {
  if (process.platform !== "linux") return null;
  for (const pid of listPids()) {
    const start = recorderStart(pid, status);
    if (start !== null) return { pid, start };
  }
  return null;
}
