/** Version and commit of this build; `make build` defines PLANTER_COMMIT at compile time. */
import pkg from "../package.json" with { type: "json" };
import { execSync } from "./host/exec.ts";

declare const PLANTER_COMMIT: string | undefined;

let cached: string | null = null;

/** The commit: compiled in, else asked of git once (a source checkout), else "unknown". Never throws. */
function commit(): string {
  if (typeof PLANTER_COMMIT === "string") return PLANTER_COMMIT;
  if (cached !== null) return cached;
  cached = "unknown";
  if (Bun.main.startsWith("/$bunfs")) return cached;
  try {
    const r = execSync("git", ["rev-parse", "--short=12", "HEAD"], {
      cwd: import.meta.dir,
      timeoutMs: 5000,
      nothrow: true,
    });
    if (r.code === 0) cached = r.stdout.trim();
  } catch {
    // no git, or not a checkout: "unknown"
  }
  return cached;
}

/** This build's version and commit. */
export const BUILD = {
  version: pkg.version,
  get commit(): string {
    return commit();
  },
};

/** Whether a command line asks only for the version (`--version`, `-V`, `-v`). */
export const asksVersion = (argv: readonly string[]) =>
  argv.length === 1 && ["--version", "-V", "-v"].includes(argv[0] as string);
