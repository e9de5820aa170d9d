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
import { configSecrets, loadConfig } from "../config.ts";
import { execSync } from "../host/exec.ts";
import { Egress } from "../jobs/egress.ts";
import { proxyEnv } from "../net/env.ts";
import type { NetRules } from "../net/policy.ts";
import type { ConnectRecord } from "../net/proxy.ts";
import { resolvePaths, socketDir } from "../paths.ts";
import { selfArgv } from "../self.ts";
import type { PipeEnds, PlanRequest, SpawnPlan } from "./backend.ts";
import { homesShown } from "./credentials.ts";
import { closeEnds, openGate } from "./gate.ts";
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
  const [setpriv, ...args] = dropArgv(id);
  const r = execSync(setpriv as string, [...args, "test", "-w", cellDir, "-a", "-x", cellDir], {
    env: { PATH: "/usr/bin:/bin" },
    clean: true,
    timeoutMs: 10_000,
    nothrow: true,
  });
  if (r.code !== 0) {
    throw new PlanterError(
      "E_SANDBOX_UNAVAILABLE",
      `as root, planter runs the command as ${id.user ?? "uid"} (uid ${id.uid}), who cannot write ${cellDir}`,
      { hint: `use a directory that user owns (chown ${id.uid} ${cellDir}), or run planter as your own user` },
    );
  }
}

/**
 * The secrets planterd's config names outside its dirs (lib/config.ts): hidden from a standalone
 * sandbox too. A config that cannot be read names none planterd could use either.
 */
function secretsOf(configPath: string): string[] {
  try {
    return configSecrets(loadConfig(configPath));
  } catch {
    return [];
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
  const list = typeof o.policy.network === "object";
  return {
    argv: o.argv,
    // A network allow list: the proxy this process serves in the sandbox's namespace (`spawnPlan`).
    env: list ? { ...o.env, ...proxyEnv() } : o.env,
    egress: list,
    cwd: o.cellDir,
    cellDir: o.cellDir,
    policy: o.policy,
    protect: [paths.stateDir, socketDir(paths.socketPath), dirname(paths.configPath), ...secretsOf(paths.configPath)],
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

/** Where a standalone run's egress records go, and names its proxy answers before DNS. */
export interface StandaloneEgress {
  rules: NetRules;
  hosts?: Record<string, string[]>;
  onRecord?: (r: ConnectRecord) => void;
}

type Stdio = ["inherit" | "ignore", "inherit" | "pipe" | "ignore", "inherit" | "pipe" | "ignore"];

/**
 * Spawn a plan with its inputs as fds 3…, as `identity` when given. A plan with a network allow
 * list (`egress`) gets its proxy from this process, as planterd gives one to a job: served until
 * the program exits; where it cannot be made, the program is killed before it runs.
 */
export function spawnPlan(
  plan: SpawnPlan,
  identity: Identity | null,
  privateDir: string,
  stdio: Stdio,
  egress?: StandaloneEgress,
): Subprocess<Stdio[0], Stdio[1], Stdio[2]> {
  const ends: PipeEnds = {};
  const fds = openInputs(plan.inputs ?? [], privateDir, identity, ends);
  let proc: Subprocess<Stdio[0], Stdio[1], Stdio[2]>;
  try {
    const argv = identity ? [...dropArgv(identity), ...plan.argv] : plan.argv;
    proc = Bun.spawn(argv, { cwd: plan.cwd, env: plan.env, stdio: [...stdio, ...fds] });
  } catch (e) {
    closeEnds(ends);
    throw e;
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  if (ends.info === undefined) return proc;
  // The gate (lib/sandbox/gate.ts): the sandbox runs its command once its mounts are the plan's,
  // and, with a network allow list, once its proxy is served from this process.
  const served = plan.egress
    ? new Egress({
        write: (fn) => {
          const events: { data: unknown }[] = [];
          fn(events as never);
          for (const e of events) egress?.onRecord?.(e.data as ConnectRecord);
        },
        hosts: egress?.hosts ?? {},
        helper: selfArgv("net-listen"),
      })
    : null;
  const rules = egress?.rules ?? { allow: [], deny: [], allow_local: false };
  const uid = process.getuid?.() ?? 0;
  served?.expect("standalone");
  const before = served ? (pid: number) => served.start("standalone", rules, pid, privateDir, uid) : undefined;
  openGate(ends, plan.planned, before, { nproc: plan.nproc, as: identity }).catch((e) => {
    proc.kill("SIGKILL");
    closeEnds(ends);
    process.stderr.write(`planter: ${(e as Error).message}\n`);
  });
  if (served) void proc.exited.then(() => served.close());
  return proc;
}
