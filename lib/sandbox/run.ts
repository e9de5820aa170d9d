/**
 * Running a sandbox plan outside planterd (`planter sandbox exec|check`, doctor, benchmarks):
 * the plan request for the calling user, and one spawn path that opens the plan's inputs and,
 * as root, drops to an unprivileged identity first, as planterd does.
 */
import { closeSync } from "node:fs";
import { homedir } from "node:os";
import { dirname } from "node:path";
import type { Subprocess } from "bun";
import { resolvePaths, socketDir } from "../paths.ts";
import type { PlanRequest, SpawnPlan } from "./backend.ts";
import { dropArgv, type Identity, rootPeerIdentity } from "./identity.ts";
import { openInputs } from "./inputs.ts";
import type { EffectivePolicy } from "./policy.ts";

/** Who a standalone sandbox runs as: root drops to `planter-job` (or nobody); others stay themselves. */
export function standaloneIdentity(): Identity | null {
  return process.getuid?.() === 0 ? rootPeerIdentity("planter-job").identity : null;
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
  const identity = standaloneIdentity();
  const real = homedir();
  return {
    argv: o.argv,
    env: o.env,
    cwd: o.cellDir,
    cellDir: o.cellDir,
    policy: o.policy,
    protect: [paths.stateDir, socketDir(paths.socketPath), dirname(paths.configPath)],
    home: o.home ?? o.scratch,
    hiddenHomes: [real, ...(identity?.home ? [identity.home] : [])],
    credentialHomes: [real, ...(identity?.home ? [identity.home] : [])],
    otherCells: [],
    workspaceReadOnly: [],
    tmpBytes: 1024 * 1024 * 1024,
    jobDir: o.jobDir,
    scratch: o.scratch,
    identity,
  };
}

/** Spawn a plan with its inputs as fds 3…, as `identity` when given. */
export function spawnPlan(
  plan: SpawnPlan,
  identity: Identity | null,
  privateDir: string,
  stdio: ["inherit" | "ignore", "inherit" | "pipe", "inherit" | "pipe"],
): Subprocess<"inherit" | "ignore", "inherit" | "pipe", "inherit" | "pipe"> {
  const fds = openInputs(plan.inputs ?? [], privateDir, identity);
  try {
    const argv = identity ? [...dropArgv(identity), ...plan.argv] : plan.argv;
    return Bun.spawn(argv, { cwd: plan.cwd, env: plan.env, stdio: [...stdio, ...fds] });
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
