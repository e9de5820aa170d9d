/**
 * Helpers for the install tests' fake hosts (a throwaway home, a shim dir first on PATH, a call
 * log): building the binary, running a program with exactly a given environment, and comparing
 * trees before and after.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { PLANTER, ROOT } from "./harness.ts";

export const SHIMS = join(ROOT, "test", "shims");

/** Compile scripts/planter.ts to `out` with PLANTER_COMMIT set to `commit`. */
export async function buildPlanter(out: string, commit = "limafixture"): Promise<void> {
  const p = Bun.spawn(
    [
      "bun",
      "build",
      "--compile",
      "--format=esm",
      "--define",
      `PLANTER_COMMIT="${commit}"`,
      "scripts/planter.ts",
      "--outfile",
      out,
    ],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
  );
  if ((await p.exited) !== 0) throw new Error(await new Response(p.stderr).text());
}

/** Run argv with exactly `env`; collect its output. */
export async function runWith(env: Record<string, string>, argv: string[], cwd?: string) {
  const p = Bun.spawn(argv, { env, cwd, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

/** planter from source with exactly `env`. */
export const planterWith = (env: Record<string, string>, ...args: string[]) =>
  runWith(env, [process.execPath, PLANTER, ...args]);

/** The lines the recording shims wrote to `log` so far (none while it does not exist). */
export const callLog = (log: string) => (): string[] =>
  existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").filter(Boolean) : [];

/** SIGKILL every process whose command line names `dir` (daemons a test started from there). */
export function killUnder(dir: string): void {
  for (const p of Bun.spawnSync(["pgrep", "-f", dir]).stdout.toString().trim().split("\n").filter(Boolean)) {
    try {
      process.kill(Number(p), "SIGKILL");
    } catch {}
  }
}

/** Every path under `dir` with its type and, for files, content hash and mode: to compare trees. */
export function tree(dir: string, skip: (rel: string) => boolean = () => false): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const rel = relative(dir, p);
      if (skip(rel)) continue;
      if (e.isDirectory()) {
        out.push(`${rel}/`);
        walk(p);
      } else if (e.isSymbolicLink()) out.push(`${rel} -> link`);
      else out.push(`${rel} ${Bun.hash(readFileSync(p)).toString(16)} ${(statSync(p).mode & 0o777).toString(8)}`);
    }
  };
  walk(dir);
  return out.sort();
}
