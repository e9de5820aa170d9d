/** Version and commit of this build; `make build` defines PLANTER_COMMIT at compile time. */
import pkg from "../package.json" with { type: "json" };

declare const PLANTER_COMMIT: string | undefined;

function commit(): string {
  if (typeof PLANTER_COMMIT === "string") return PLANTER_COMMIT;
  const r = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], {
    cwd: import.meta.dir,
    stdout: "pipe",
    stderr: "ignore",
  });
  return r.exitCode === 0 ? r.stdout.toString().trim() : "unknown";
}

/** This build's version and commit. */
export const BUILD = {
  version: pkg.version,
  get commit(): string {
    return commit();
  },
};
