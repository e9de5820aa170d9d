/**
 * The exit-status recorder: a tiny /bin/sh that leads the job's session and process group,
 * runs the job, and writes its exit status to a file. It survives a group SIGTERM (a trap,
 * which the job does not inherit) so the status is recorded even while planterd is down.
 *
 * With pipes (sandboxed jobs), the job never holds its log files: it writes into two FIFOs
 * that two `cat`s (ignoring TERM, so a kill does not lose what is in flight) append to the logs,
 * so a job cannot truncate or rewrite what was recorded. The pumps copy as bytes arrive (`cat`
 * reads and writes, no buffering: a follower sees output live); the log quota is the monitor's,
 * as for every job. (`head -c QUOTA` kept the disk to the quota exactly, but GNU head buffers
 * its output through stdio: a job's log stayed empty while it ran.)
 *
 * The status file is made at launch with a placeholder of the size of a status ("-  \n"), and
 * the recorder writes over it in place (`1<>`, no truncation): the blocks it needs exist before
 * the job runs, so a job that fills the disk cannot keep its own exit status from being written.
 *
 * Its first act (after its own signal traps) claims the job: it creates the job dir's `pid` file exclusively (noclobber: one
 * O_EXCL open) and writes its own pid there, before anything of the job runs. A planterd
 * restarted after a crash between spawn and `running` finds the job by that file; one that
 * claimed the file first (the job never started) makes a late recorder exit 125 without running
 * anything. See `lib/jobs/claim.ts`.
 */

import { dlopen, FFIType } from "bun:ffi";
import { chownSync, closeSync, existsSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { LIBC } from "../libc.ts";

// The exclusive create and the pid are two steps: on a full disk the create works and the write
// may not; an empty pid file is found by planterd through the recorder's command line instead.
const CLAIM = `set -C
{ true >"\${s%/*}/pid"; } 2>/dev/null || { echo 'planter: planterd gave this job up before it started: it did not run' >&2; exit 125; }
set +C
{ echo $$ >>"\${s%/*}/pid"; } 2>/dev/null`;

/**
 * The job's command, as a child of the recorder. With cgroups (`$g`: the groups' `cgroup.procs`
 * files, one per line) the child writes its own pid into each before it execs the job, so nothing
 * of the job runs outside its groups and the recorder stays out (it outlives an OOM kill of the
 * group). The child reads its pid from /proc/self/stat: no extra program is run.
 */
const run = (redirect: string, limit = "") => `if [ -n "$g" ]; then
  (set -f; read -r p _ </proc/self/stat || exit 125
  IFS='
'
  for f in $g; do { echo "$p" >"$f"; } 2>/dev/null || { echo "planter: cannot enter cgroup: $f" >&2; exit 125; }; done
  ${limit}exec "$@")${redirect}
else
  ${limit ? `(${limit}exec "$@")` : '"$@"'}${redirect}
fi`;

/**
 * RLIMIT_NPROC where no cgroup limits the job (lib/jobs/tasks.ts): the recorder's own (its pumps
 * and its fork of the job are under it) and the job's, set by the recorder's child before it execs
 * the job (hard and soft: the job cannot raise it). Shell builtins: no extra process.
 */
export interface NprocLimits {
  /** /bin/sh's `ulimit` option for RLIMIT_NPROC. */
  flag: "-p" | "-u";
  recorder: number;
  job: number;
}

const jobLimit = (n: NprocLimits | undefined) =>
  n ? `ulimit ${n.flag} ${n.job} 2>/dev/null || { echo 'planter: cannot set the process limit' >&2; exit 125; }; ` : "";
const recorderLimit = (n: NprocLimits | undefined) =>
  n
    ? [`ulimit ${n.flag} ${n.recorder} 2>/dev/null || { echo 'planter: cannot set the process limit' >&2; exit 125; }`]
    : [];

/**
 * A job with stdin (`planter run -i`, `stdin: true`; lib/jobs/stdin.ts): the recorder's own fd 0 is
 * the FIFO `stdin` of the job dir, opened read-write by planterd before the spawn, so the pipe
 * has a writer from before the job is answered until its input ends. The recorder moves it to a
 * keeper (a subshell, signals ignored as the pumps ignore them) and gives the job a read-only
 * descriptor of its own. The keeper holds the write side while planterd comes and goes (a
 * restart never ends the job's input) and lets go at the first line on `stdin.ctl`, or at once
 * when `stdin.closed` exists (planterd writes the mark, then the line: whichever the keeper sees
 * first, it never waits for a line it missed), or when `stdin.ctl` has no writer left: the
 * recorder holds its only lasting one and lets go when the job has ended — or dies, so a keeper
 * never outlives its recorder. With the keeper gone the job reads the end of its input once the
 * pipe is empty. (A background subshell starts with /dev/null on fd 0 in a shell without job
 * control: the pipe is moved to fd 9 before the fork.)
 */
/** The first fd STDIN_OPEN takes in the recorder (and bwrap would inherit): a plan's inputs stay below or move above 9. */
export const STDIN_FIRST_FD = 7;
const STDIN_OPEN = `i=\${s%/*}/stdin
[ -p "$i" ] || { echo 'planter: the stdin pipe of the job is missing' >&2; exit 125; }
exec 9<&0 0</dev/null 7<"$i" 8<>"$i.ctl"
(trap '' TERM INT HUP QUIT USR1 USR2; exec 6<"$i.ctl" 7<&- 8<&- >/dev/null 2>&1; [ -e "$i.closed" ] || read -r _ <&6) &
exec 9<&-`;

const STDIN_END = "exec 7<&- 8<&-";

/**
 * The recorder's script: with `pipes`, the job writes into the FIFOs `STATUS.out` / `.err` that
 * two pumps append to the logs; with `stdin`, the job reads the FIFO `stdin` (STDIN_OPEN); with
 * `report`, the recorder's fd 0 is an agent job's report FIFO (lib/agents/report.ts), opened
 * read-write by planterd, which the recorder holds for the job's life — a FIFO keeps what a hook
 * wrote only while someone holds it open, and the recorder outlives planterd — while the job
 * reads /dev/null (background lists, the pumps, start on /dev/null as well).
 * umask 022: planterd's own 077 is for its state, not for what a job writes in its cell.
 */
function recorderScript(pipes: boolean, stdin: boolean, report = false, nproc?: NprocLimits): string {
  const redirect = `${pipes ? ' >"$s.out" 2>"$s.err"' : ""}${stdin ? " <&7 7<&- 8<&-" : report ? " </dev/null" : ""}`;
  return [
    "s=$1; g=$2; shift 2",
    "umask 022",
    "trap ':' TERM INT HUP QUIT USR1 USR2",
    CLAIM,
    ...recorderLimit(nproc),
    ...(pipes
      ? [
          `(trap '' TERM INT HUP QUIT USR1 USR2; exec cat) <"$s.out" &`,
          `(trap '' TERM INT HUP QUIT USR1 USR2; exec cat) <"$s.err" >&2 &`,
        ]
      : []),
    ...(stdin ? [STDIN_OPEN] : []),
    run(redirect, jobLimit(nproc)),
    "c=$?",
    ...(stdin ? [STDIN_END] : []),
    ...(pipes || stdin ? ["until wait; do :; done"] : []),
    `printf '%-3s\\n' "$c" 1<>"$s"`,
    'exit "$c"',
  ].join("\n");
}

const DIRECT = recorderScript(false, false);
const PIPED = recorderScript(true, false);

/**
 * The warm recorder: it starts the sandbox before its job is known. The first line of its stdin
 * (a pipe from planterd) names the status file of the dir it is made in: beside it the logs, the
 * FIFOs and `$w.in`, where the shell in the sandbox reads its commands. Its fd 3 is a pipe from
 * planterd too (the plan's inputs follow it). Once a job is given to it, planterd has renamed
 * the dir to the job's and written the job's environment, cwd and argv to `$w.in` as shell
 * commands (builtins only), and writes the job's status file to fd 3 and to the stdin. A
 * subshell waiting on fd 3 claims that job as the recorder does, and only then sends the shell
 * its `exec`; a claim that fails, or the end of fd 3 (planterd stopped, or gave the sandbox up),
 * closes `$w.in` with no `exec` sent: the shell exits and nothing of a job ran. The subshell's
 * open of `$w.in` for writing waits for the shell's open for reading: so neither end can be
 * left alone (a gate that opened it read-write and ended first, planterd gone, left the shell's
 * open waiting for good, its pumps and the recorder with it). The sandbox runs
 * in the foreground, as the recorder runs its job (a background list would start it with SIGINT
 * and SIGQUIT ignored, for good), and its status is recorded as the recorder records it, in the
 * status file read from the stdin, when the pid file there is this recorder's claim. The token
 * names this recorder for a restarted planterd (`claim.ts`); no path of planter's is in its
 * command line.
 */
const WARM = `t=$1; g=$2; shift 2
read -r w || exit 0
umask 022
trap ':' TERM INT HUP QUIT USR1 USR2
(trap '' TERM INT HUP QUIT USR1 USR2
exec 9>"$w.in"
read -r s <&3 || exit 0
exec 3<&-
${CLAIM.replace("exit 125; }", "exit 0; }")}
printf 'exec "$@" </dev/null\\n' >&9) &
exec 3<&-
(trap '' TERM INT HUP QUIT USR1 USR2; exec cat) <"$w.out" &
(trap '' TERM INT HUP QUIT USR1 USR2; exec cat) <"$w.err" >&2 &
${run(' <"$w.in" >"$w.out" 2>"$w.err"')}
c=$?
until wait; do :; done
read -r s || exit 125
[ -e "\${s%/*}/pid" ] || exit 125
p=; { read -r p <"\${s%/*}/pid"; } 2>/dev/null
case $p in "$$"|"") ;; *) exit 125 ;; esac
printf '%-3s\\n' "$c" 1<>"$s"
exit "$c"`;

/** argv of a warm recorder (`WARM`) that runs `argv` (the sandbox, whose job is `sh -s`) in `groups`. */
export function warmRecorderArgv(token: string, argv: string[], groups: string[] = []): string[] {
  if (groups.some((g) => g.includes("\n"))) throw new Error("a cgroup path holds a newline");
  return ["/bin/sh", "-c", WARM, "planter-warm", token, groups.join("\n"), ...argv];
}

/** The file of a warm sandbox's dir that names its recorder's token (read by `claim.ts`). */
export const WARM_TOKEN_FILE = "warm";

/** The FIFO the shell of a warm sandbox reads its commands from (beside the status file). */
export const warmInput = (statusFile: string) => `${statusFile}.in`;

/**
 * argv that runs `argv` under the recorder, writing the status to `statusFile`. With `pipes`
 * the FIFOs `statusFile.out` / `.err` must exist (`makePipes`). `groups` are the `cgroup.procs`
 * files the job enters before it runs (none: it runs in the recorder's groups). With `stdin` the
 * recorder's fd 0 must be the job dir's FIFO `stdin`, open read-write (lib/jobs/stdin.ts); with
 * `report` (never with `stdin`) an agent job's report FIFO, open read-write, which the recorder
 * holds while the job runs on /dev/null. `nproc`: the recorder's and the job's RLIMIT_NPROC
 * (lib/jobs/tasks.ts), for a job no cgroup limits.
 */
export function recorderArgv(
  statusFile: string,
  argv: string[],
  pipes = false,
  groups: string[] = [],
  stdin = false,
  report = false,
  nproc?: NprocLimits,
): string[] {
  if (groups.some((g) => g.includes("\n"))) throw new Error("a cgroup path holds a newline");
  const script = nproc
    ? recorderScript(pipes, stdin, !stdin && report, nproc)
    : stdin
      ? recorderScript(pipes, true)
      : report
        ? recorderScript(pipes, false, true)
        : pipes
          ? PIPED
          : DIRECT;
  return ["/bin/sh", "-c", script, "planter-job", statusFile, groups.join("\n"), ...argv];
}

/** Files of one job directory. */
export const jobFiles = (dir: string) => ({
  stdout: join(dir, "stdout"),
  stderr: join(dir, "stderr"),
  status: join(dir, "exit"),
  /** The recorder's pid, written as its first act (or "abandoned", by a restarted planterd). */
  pid: join(dir, "pid"),
});

/** What the status file holds until the job has ended: as long as a status, and never one. */
export const STATUS_PLACEHOLDER = "-  \n";

/** The status file's content for exit code `code` (padded to the placeholder's size). */
export const statusText = (code: number) => `${String(code).padEnd(3)}\n`;

/**
 * The recorded exit status, or null when none was written. The recorder writes "CODE\n" (padded
 * to four bytes, over the placeholder) with one write(2) (no `mv`: an exec saved per job), so a
 * file being written reads as the placeholder or whole; only a whole line counts. "CODE\n"
 * unpadded is what recorders of earlier versions wrote.
 */
export function readStatus(statusFile: string): number | null {
  if (!existsSync(statusFile)) return null;
  const text = readFileSync(statusFile, "utf8");
  if (!/^\d{1,3} *\n$/.test(text)) return null;
  const n = Number(text.trim());
  return n <= 255 ? n : null;
}

/** Make the status file with its placeholder (before the job starts). */
export function prepareStatus(statusFile: string): void {
  writeFileSync(statusFile, STATUS_PLACEHOLDER, { mode: 0o600 });
}

/**
 * Write exit status `code` over the placeholder, in place (planterd's fallback when the recorder
 * could not, its exit code standing in). False when there is no placeholder to write over.
 */
export function writeStatusInPlace(statusFile: string, code: number): boolean {
  let fd = -1;
  try {
    fd = openSync(statusFile, "r+");
    const text = statusText(code);
    return writeSync(fd, text, 0) === text.length;
  } catch {
    return false;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

let libc: { symbols: { mkfifo: (path: Uint8Array, mode: number) => number } } | null = null;

/** Create the FIFO `path` (mode 0600). */
export function mkfifo(path: string): void {
  libc ??= dlopen(LIBC, {
    mkfifo: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
  }) as unknown as typeof libc;
  if (libc?.symbols.mkfifo(new TextEncoder().encode(`${path}\0`), 0o600) !== 0)
    throw new Error(`cannot create the pipe ${path}`);
}

/** Create the two FIFOs of a piped job next to its status file (mode 0600), owned by `owner` when given. */
export function makePipes(statusFile: string, owner: { uid: number; gid: number } | null = null): void {
  for (const suffix of [".out", ".err"]) {
    mkfifo(`${statusFile}${suffix}`);
    if (owner) chownSync(`${statusFile}${suffix}`, owner.uid, owner.gid);
  }
}
