/**
 * Handing a job its environment without giving it to any host-side process of planter: the
 * variables travel in an fd and are set by a shell that runs as the job's last step before
 * exec, so the recorder, setpriv and sandbox-exec all run with planter's fixed environment
 * (an `LD_PRELOAD` of the job's never loads into them), and no value shows in a process listing.
 */

/** The fixed environment of planter's own host-side processes. */
export const HOST_ENV: Record<string, string> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
};

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/** The shell text that exports `env` (names are checked by the API; values may hold anything). */
export function envScript(env: Record<string, string>): string {
  return Object.entries(env)
    .filter(([k]) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
    .map(([k, v]) => `export ${k}=${quote(v)}\n`)
    .join("");
}

/** argv that sets the environment read from fd `fd`, closes it and execs `argv`. */
export function envLoaderArgv(argv: string[], fd: number): string[] {
  return ["/bin/sh", "-c", `. /dev/fd/${fd} && exec ${fd}<&- && exec "$@"`, "planter-env", ...argv];
}
