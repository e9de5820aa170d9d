/**
 * The exit-status recorder: a tiny /bin/sh that leads the job's session and process group,
 * runs the job, and writes its exit status to a file. It survives a group SIGTERM (a trap,
 * which the job does not inherit) so the status is recorded even while planterd is down.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const SCRIPT = `s=$1; shift
trap ':' TERM INT HUP QUIT USR1 USR2
"$@"
c=$?
printf '%s\\n' "$c" > "$s.tmp" && command -p mv -f "$s.tmp" "$s"
exit "$c"`;

/** argv that runs `argv` under the recorder, writing the status to `statusFile`. */
export function recorderArgv(statusFile: string, argv: string[]): string[] {
  return ["/bin/sh", "-c", SCRIPT, "planter-job", statusFile, ...argv];
}

/** Files of one job directory. */
export const jobFiles = (dir: string) => ({
  stdout: join(dir, "stdout"),
  stderr: join(dir, "stderr"),
  status: join(dir, "exit"),
});

/** The recorded exit status, or null when none was written. */
export function readStatus(statusFile: string): number | null {
  if (!existsSync(statusFile)) return null;
  const n = Number(readFileSync(statusFile, "utf8").trim());
  return Number.isInteger(n) && n >= 0 && n <= 255 ? n : null;
}
