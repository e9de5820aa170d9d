/**
 * Running host programs for the host scripts (install, uninstall): through zx, imported lazily
 * so the daemon and job-control paths never pay for it. Programs are found on PATH, so tests put
 * recording shims first.
 */
import type { Run } from "./systemd.ts";

/** Run `program args…`; never throws for a non-zero exit (the caller decides). */
export async function run(program: string, ...args: string[]): Promise<Run> {
  const { $ } = await import("zx");
  const p = await $({ nothrow: true, quiet: true, stdio: ["ignore", "pipe", "pipe"] })`${program} ${args}`;
  return { code: p.exitCode ?? 1, stdout: p.stdout, stderr: p.stderr };
}

/** zx's `exit code: 127 (Command not found)`-style summary of a failed call, with its stderr. */
export function describe(program: string, args: string[], r: Run): string {
  const what = r.code === 127 ? "command not found" : `exit code ${r.code}`;
  return `${program} ${args.join(" ")}: ${what}${r.stderr.trim() ? `: ${r.stderr.trim()}` : ""}`;
}

/**
 * Run `program args…` found on `env.PATH`, with `env` over this process's environment (so a
 * caller that drives another host's code paths — tests with recording shims — decides which
 * program answers). Never throws for a non-zero exit; 127 when the program is not found.
 */
export async function runWith(
  env: Record<string, string | undefined>,
  program: string,
  ...args: string[]
): Promise<Run> {
  const merged = { ...process.env, ...env };
  const bin = Bun.which(program, { PATH: merged.PATH ?? "/usr/bin:/bin" });
  if (!bin) return { code: 127, stdout: "", stderr: `${program}: not found` };
  const p = Bun.spawn([bin, ...args], { env: merged, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}
