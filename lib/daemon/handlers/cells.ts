/** Cells: create, list, show, remove. */
import { existsSync, mkdirSync, realpathSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Cell, SandboxSpec } from "../../api/contract.ts";
import { badRequest, conflict, notFound, PlanterError } from "../../api/errors.ts";
import type { Routes } from "../../api/routes.ts";
import { ceilingNetwork, checkCeilingMode } from "../../mcp/ceiling.ts";
import { jobDir, stateFiles } from "../../paths.ts";
import { canonicalAs, plantedSymlink } from "../../sandbox/paths.ts";
import { capNetwork, complete, describeNetwork, isWidening, unsafePolicy } from "../../sandbox/policy.ts";
import {
  type CellRow,
  cellView,
  countCellsOf,
  deleteCell,
  getCell,
  insertCell,
  listCells,
  updateCellSandbox,
} from "../../state/cells.ts";
import { recordRef } from "../../state/idempotency.ts";
import { deleteJob, listJobs, liveJobs } from "../../state/jobs.ts";
import type { Context } from "../context.ts";
import {
  cellDirProblem,
  cellPolicy,
  checkCellAccess,
  checkPeerPaths,
  daemonIsRoot,
  ownerFor,
  protectedPaths,
  writableTrees,
} from "../launch.ts";
import type { Peer } from "../peer.ts";
import { ok, type Reply, type Req } from "../router.ts";
import { checkMode, defaultCellName, ensureCell, goneResult, requestRef, requireCell } from "./common.ts";

/** A cell dir the request names, as stored: an existing directory, canonical, the peer's own, and safe to hold a cell. */
function givenCellDir(ctx: Context, given: string, peerUser: Peer | null): string {
  if (!existsSync(given) || !statSync(given).isDirectory()) {
    throw new PlanterError("E_BAD_REQUEST", `cell dir ${given} is not an existing directory`, {
      hint: `create it first: mkdir -p ${given}`,
    });
  }
  const planted = plantedSymlink(given, writableTrees(ctx));
  if (planted) {
    throw new PlanterError("E_BAD_REQUEST", `cell dir ${given} is refused: ${planted}`, {
      hint: "a symlink a job could have planted is never followed; name the directory itself",
    });
  }
  // Stored canonical: a trailing slash, `..` or a symlink never makes two names for one dir.
  // A peer's dir as the peer reaches it (a symlink swapped since its check changes nothing).
  const dir = peerUser ? canonicalAs(given, peerUser, "cell dir") : realpathSync(given);
  // A user's cell is a directory of their own: root's review acts on it after every job.
  if (peerUser && statSync(dir).uid !== peerUser.uid) {
    throw new PlanterError(
      "E_UNAUTHORIZED_PEER",
      `cell dir ${dir} is not yours (uid ${statSync(dir).uid}; you are uid ${peerUser.uid})`,
      {
        hint: "make a cell of a directory you own",
      },
    );
  }
  const why = cellDirProblem(ctx, dir);
  if (why) {
    throw new PlanterError("E_BAD_REQUEST", `cell dir ${dir} is unsafe: ${why}`, {
      hint: "use a project directory of its own (not /, a system dir, a home dir itself, planter's dirs or another cell's)",
    });
  }
  return dir;
}

export function create(ctx: Context, req: Req<Routes["createCell"]>): Reply<Cell> {
  const body = req.body;
  const ref = requestRef(ctx, "cells", body.request_ref, req.raw);
  if (body.request_ref) {
    const prior = ref.prior();
    if (prior) {
      const cell = getCell(ctx.db, prior);
      if (cell) return ok(view(ctx, cell), 200);
      throw goneResult(body.request_ref, `cell ${prior}`);
    }
  }
  checkPeerPaths(req.peer, { dir: body.dir, policy: body.sandbox?.policy });
  checkSettings(ctx, req.peer, body.name, { env: body.env, limits: body.limits, sandbox: body.sandbox ?? {} }, null);
  if (req.ceiling) {
    checkCeilingMode(req.ceiling, body.sandbox?.mode ?? ctx.defaultMode, `of cell ${body.name}`);
    ceilingNetwork(req.ceiling, complete(body.sandbox?.policy).network);
  }
  const peerUser = daemonIsRoot() && req.peer && req.peer.uid !== 0 ? req.peer : null;
  if (getCell(ctx.db, body.name)) {
    throw conflict(
      `cell ${JSON.stringify(body.name)} already exists`,
      `see it with \`planter cell show ${body.name}\``,
    );
  }
  const managed = body.dir === undefined;
  const dir =
    body.dir === undefined
      ? join(stateFiles(ctx.paths.stateDir).cells, body.name)
      : givenCellDir(ctx, body.dir, peerUser);
  const owner = ownerFor(ctx, req.peer, managed ? null : dir);
  const cap = ctx.config.api.max_cells_per_uid;
  if (cap && owner !== null && countCellsOf(ctx.db, owner) >= cap) {
    throw new PlanterError(
      "E_UNAVAILABLE",
      `uid ${owner} already owns ${cap} cells, the most one user may ([api] max_cells_per_uid)`,
      { hint: "remove cells no longer used (planter cell rm NAME), or raise [api] max_cells_per_uid" },
    );
  }
  if (managed) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cell: CellRow = {
    name: body.name,
    dir,
    managed,
    env: body.env ?? {},
    limits: body.limits ?? {},
    sandbox: body.sandbox ?? {},
    created_at: Date.now(),
    owner_uid: owner,
  };
  ctx.write((ev) => {
    insertCell(ctx.db, cell);
    if (body.request_ref) recordRef(ctx.db, "cells", body.request_ref, ref.hash, cell.name);
    ev.push({ kind: "cell.created", subject: `cell/${cell.name}`, data: { dir, managed, ...req.audit } });
  });
  return ok(view(ctx, cell), 201);
}

export function list(ctx: Context, _req: Req<Routes["listCells"]>): Reply<{ cells: Cell[] }> {
  return ok({ cells: listCells(ctx.db).map((c) => view(ctx, c)) });
}

export function show(ctx: Context, req: Req<Routes["getCell"]>): Reply<Cell> {
  return ok(view(ctx, requireCell(ctx, req.params.name)));
}

/**
 * Change a cell's sandbox (its owner, or root): the mode, the whole policy, or only the policy's
 * network. Checked as at creation, the network within the config's ceiling; recorded as
 * `cell.updated` with what changed. Jobs already running keep the policy they started with; a job
 * being prepared meanwhile is refused (jobs.ts), never started with the policy replaced.
 */
export function update(ctx: Context, req: Req<Routes["updateCell"]>): Reply<Cell> {
  const name = req.params.name;
  const cell = name === defaultCellName(ctx, req.peer) ? ensureCell(ctx, name, req.peer) : requireCell(ctx, name);
  checkCellAccess(ctx, req.peer, cell);
  const change = req.body.sandbox;
  const before = cell.sandbox;
  const after: SandboxSpec = { ...before };
  if (change.mode !== undefined) after.mode = change.mode;
  if (change.policy !== undefined) after.policy = change.policy;
  if (change.network !== undefined) after.policy = { ...(after.policy ?? {}), network: change.network };
  const policyChanged = change.policy !== undefined || change.network !== undefined;
  if (policyChanged && after.policy) checkPeerPaths(req.peer, { policy: after.policy });
  checkSettings(ctx, req.peer, name, { env: cell.env, limits: cell.limits, sandbox: after }, before, {
    policy: policyChanged,
  });
  if (JSON.stringify(after) === JSON.stringify(before)) return ok(view(ctx, cell));
  const was = sandboxSummary(ctx, before);
  const now = sandboxSummary(ctx, after);
  const changed = (Object.keys(now) as (keyof typeof now)[]).filter(
    (k) => JSON.stringify(was[k]) !== JSON.stringify(now[k]),
  );
  ctx.write((ev) => {
    // Nothing yields between reading the cell and here; this keeps an event from ever naming a cell
    // that is gone, should that change.
    if (!getCell(ctx.db, name))
      throw notFound(`no cell named ${JSON.stringify(name)}`, "list cells with `planter cell ls`");
    updateCellSandbox(ctx.db, name, after);
    ev.push({
      kind: "cell.updated",
      subject: `cell/${name}`,
      data: { changed, before: was, after: now, ...req.audit },
    });
  });
  return ok(view(ctx, getCell(ctx.db, name) as CellRow));
}

/**
 * Refuse settings of a cell (at creation, at an update) that its jobs could not run with: larger
 * than `[api] max_cell_bytes`, a mode the config does not allow, `env.pass` names a non-root peer
 * adds (planterd's own variables), an unsafe path, a network beyond the config's ceiling. `was`:
 * the cell's sandbox before an update (what it had is not refused again for being there);
 * `check.policy` false: the policy is not being changed (a mode-only update).
 */
function checkSettings(
  ctx: Context,
  peer: Peer | null,
  name: string,
  settings: { env: CellRow["env"] | undefined; limits: CellRow["limits"] | undefined; sandbox: SandboxSpec },
  was: SandboxSpec | null,
  check: { policy: boolean } = { policy: true },
): void {
  // A cell is read by every `cell ls` and kept for ever: its env, limits and policy stay small.
  const size = JSON.stringify(settings).length;
  const most = ctx.config.api.max_cell_bytes;
  if (size > most) {
    throw badRequest(
      `cell ${name}'s env, limits and sandbox policy take ${size} bytes; a cell keeps at most ${most}`,
      "pass large values to jobs (--env) or through files in the cell dir ([api] max_cell_bytes sets the limit)",
    );
  }
  const { mode, policy } = settings.sandbox;
  if (mode && mode !== was?.mode) checkMode(ctx, mode, `of cell ${name}`);
  if (!policy || !check.policy) return;
  const peerUser = daemonIsRoot() && peer && peer.uid !== 0 ? peer : null;
  const had = new Set(was?.policy?.env?.pass ?? []);
  const added = (policy.env?.pass ?? []).filter((n) => !had.has(n));
  if (peerUser && added.length) {
    throw new PlanterError(
      "E_UNAUTHORIZED_PEER",
      `env.pass hands planterd's own (root's) variables to jobs: only root may name them (${added.join(", ")})`,
      { hint: "set values with env.set or --env instead" },
    );
  }
  // A cell's policy is checked whole now (paths resolved, nothing unsafe), not at its first job.
  const effective = cellPolicy(ctx, policy, peerUser);
  const why = unsafePolicy(effective, protectedPaths(ctx, "daemon"));
  if (why) throw new PlanterError("E_BAD_REQUEST", why, { hint: "choose another path" });
  const capped = capNetwork(ctx.config.network, effective.network);
  if (isWidening(capped)) throw badRequest(`cell ${name}'s ${capped.what}`, capped.hint);
}

/** The cell as the API shows it, with the sandbox its jobs get. */
function view(ctx: Context, cell: CellRow): Cell {
  return cellView(ctx.db, cell, effectiveSandbox(ctx, cell.sandbox));
}

/**
 * What a cell's jobs get unless they narrow it: its mode or the daemon's, its policy over the
 * config's default (paths as given: each job resolves them as its user), the network under the
 * config's ceiling, or why that ceiling refuses it.
 */
function effectiveSandbox(ctx: Context, s: SandboxSpec): Cell["effective_sandbox"] {
  const policy = complete(s.policy, complete(ctx.config.sandbox.policy));
  const capped = capNetwork(ctx.config.network, policy.network);
  return {
    mode: s.mode ?? ctx.defaultMode,
    policy: isWidening(capped) ? policy : { ...policy, network: capped },
    refused: isWidening(capped) ? capped.what : null,
  };
}

/**
 * A cell's sandbox for its `cell.updated` event: the mode (null: the daemon's default), whether
 * it has a policy of its own, the policy it gives its jobs with the network in words, and the
 * names, never the values, of the variables it sets (events are read by every peer, and kept).
 */
function sandboxSummary(ctx: Context, s: SandboxSpec) {
  const p = complete(s.policy, complete(ctx.config.sandbox.policy));
  return {
    mode: s.mode ?? null,
    own_policy: s.policy !== undefined,
    fs_mode: p.fs_mode,
    network: describeNetwork(p.network),
    read_write: p.read_write,
    read_only: p.read_only,
    deny: p.deny,
    unix_sockets: p.unix_sockets,
    workspace_config: p.workspace_config,
    env_pass: p.env.pass,
    env_set: Object.keys(p.env.set),
  };
}

/** Remove a cell, its jobs and their logs; running jobs refuse unless force, which kills them first. */
export async function remove(
  ctx: Context,
  req: Req<Routes["removeCell"]>,
): Promise<Reply<{ removed: string; jobs_removed: number }>> {
  const force = req.query.force;
  const cell = requireCell(ctx, req.params.name);
  checkCellAccess(ctx, req.peer, cell);
  const live = liveJobs(ctx.db, cell.name);
  if (live.length && !force) {
    throw conflict(
      `cell ${cell.name} has ${live.length} running job(s)`,
      `kill them first, or remove with --force (kills them): planter cell rm --force ${cell.name}`,
      { running: live.map((j) => j.id) },
    );
  }
  if (live.length) {
    const ended = live.map(
      (j) =>
        new Promise<void>((resolve) => {
          const off = ctx.bus.onJobEnd(j.id, resolve);
          try {
            ctx.supervisor.kill(j.id, { force: true, audit: req.audit });
          } catch {
            // Ended already; one whose workspace review is under way ends when that is done.
            if (ctx.supervisor.settling(j.id)) return;
            off();
            resolve();
          }
        }),
    );
    const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 10_000));
    if ((await Promise.race([Promise.all(ended), timeout])) === "timeout") {
      throw new PlanterError("E_CONFLICT", `jobs of cell ${cell.name} did not end within 10 s of SIGKILL`, {
        hint: "check `planter job ls --cell` and try again",
      });
    }
  }
  const jobs = listJobs(ctx.db, { cell: cell.name, limit: 1_000_000 });
  ctx.write((ev) => {
    for (const j of jobs) deleteJob(ctx.db, j.id);
    deleteCell(ctx.db, cell.name);
    ev.push({
      kind: "cell.removed",
      subject: `cell/${cell.name}`,
      data: { jobs_removed: jobs.length, forced: force, ...req.audit },
    });
  });
  for (const j of jobs) rmSync(jobDir(ctx.paths.stateDir, j.id), { recursive: true, force: true });
  if (cell.managed) rmSync(cell.dir, { recursive: true, force: true });
  rmSync(join(ctx.paths.stateDir, "homes", cell.name), { recursive: true, force: true });
  return ok({ removed: cell.name, jobs_removed: jobs.length });
}
