/**
 * Running a sandbox plan outside planterd (`planter sandbox exec|check`, doctor, benchmarks):
 * the plan request for the calling user, and one spawn path that opens the plan's inputs and,
 * as root, drops to an unprivileged identity first, as planterd does.
 */
import { closeSync, realpathSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname } from "node:path";
import type { Subprocess } from "bun";
import { PlanterError } from "../api/errors.ts";
import { resolvePaths, socketDir } from "../paths.ts";
import type { PlanRequest, SpawnPlan } from "./backend.ts";
import { homesShown } from "./credentials.ts";
import { dropArgv, type Identity, identityOf, rootPeerIdentity } from "./identity.ts";
import { openInputs } from "./inputs.ts";
import type { EffectivePolicy } from "./policy.ts";

/**
 * Who a standalone sandbox runs as: others stay themselves; root runs the command as the cell
 * dir's owner when that is not root, else as `planter-job` (or nobody) — never as root.
 */
export function standaloneIdentity(cellDir?: string): Identity | null {
  if (process.getuid?.() !== 0) return null;
  const owner = cellDir ? statSync(cellDir, { throwIfNoEntry: false })?.uid : undefined;
  if (owner !== undefined && owner !== 0) return identityOf(owner, []);
  return rootPeerIdentity("planter-job").identity;
}

/** Refuse a cell the identity cannot write (root's own dirs, as nobody), with the reason. */
export function checkCellWritable(cellDir: string, id: Identity | null): void {
  if (!id) return;
  const r = Bun.spawnSync([...dropArgv(id), "test", "-w", cellDir, "-a", "-x", cellDir], {
    env: { PATH: "/usr/bin:/bin" },
  });
  if (r.exitCode !== 0) {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      `as root, planter runs the command as ${id.user ?? "uid"} (uid ${id.uid}), who cannot write ${cellDir}`,
      { hint: `use a directory that user owns (chown ${id.uid} ${cellDir}), or run planter as your own user` },
    );
  }
}

/** A plan request for the calling user, with planter's paths protected and the real home hidden. */
export function hostRequest(o: {
  argv: string[];
  cellDir: string;
  policy: EffectivePolicy;
  env: Record<string, string>;
  jobDir: string;
  scratch: string;
  home?: string;
}): PlanRequest {
  const paths = resolvePaths();
  const identity = standaloneIdentity(o.cellDir);
  // Homes as they really are (a home through a symlink is hidden at its target, as planterd does).
  const homes = [...new Set([homedir(), ...(identity?.home ? [identity.home] : [])].map(realHome))];
  return {
    argv: o.argv,
    env: o.env,
    cwd: o.cellDir,
    cellDir: o.cellDir,
    policy: o.policy,
    protect: [paths.stateDir, socketDir(paths.socketPath), dirname(paths.configPath)],
    home: o.home ?? o.scratch,
    hiddenHomes: homes,
    credentialHomes: [...new Set([...homes, ...homesShown([...o.policy.read_write, ...o.policy.read_only])])],
    otherCells: [],
    workspaceReadOnly: [],
    tmpBytes: 1024 * 1024 * 1024,
    jobDir: o.jobDir,
    scratch: o.scratch,
    identity,
  };
}

function realHome(h: string): string {
  try {
    return realpathSync(h);
  } catch {
    return h;
  }
}

/** Spawn a plan with its inputs as fds 3…, as `identity` when given. */
export function spawnPlan(
  plan: SpawnPlan,
  identity: Identity | null,
  privateDir: string,
  stdio: ["inherit" | "ignore", "inherit" | "pipe" | "ignore", "inherit" | "pipe" | "ignore"],
): Subprocess<"inherit" | "ignore", "inherit" | "pipe" | "ignore", "inherit" | "pipe" | "ignore"> {
  const fds = openInputs(plan.inputs ?? [], privateDir, identity);
  try {
    const argv = identity ? [...dropArgv(identity), ...plan.argv] : plan.argv;
    return Bun.spawn(argv, { cwd: plan.cwd, env: plan.env, stdio: [...stdio, ...fds] });
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
