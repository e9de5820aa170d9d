/** Cells: create, list, show, remove. */
import { existsSync, mkdirSync, realpathSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Cell } from "../../api/contract.ts";
import { conflict, PlanterError } from "../../api/errors.ts";
import type { Routes } from "../../api/routes.ts";
import { jobDir, stateFiles } from "../../paths.ts";
import { plantedSymlink } from "../../sandbox/paths.ts";
import { unsafePolicy } from "../../sandbox/policy.ts";
import { type CellRow, cellView, deleteCell, getCell, insertCell, listCells } from "../../state/cells.ts";
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
import { ok, type Reply, type Req } from "../router.ts";
import { checkMode, goneResult, requestRef, requireCell } from "./common.ts";

export function create(ctx: Context, req: Req<Routes["createCell"]>): Reply<Cell> {
  const body = req.body;
  const ref = requestRef(ctx, "cells", body.request_ref, req.raw);
  if (body.request_ref) {
    const prior = ref.prior();
    if (prior) {
      const cell = getCell(ctx.db, prior);
      if (cell) return ok(cellView(ctx.db, cell), 200);
      throw goneResult(body.request_ref, `cell ${prior}`);
    }
  }
  checkPeerPaths(req.peer, { dir: body.dir, policy: body.sandbox?.policy });
  if (body.sandbox?.mode) checkMode(ctx, body.sandbox.mode, `of cell ${body.name}`);
  const peerUser = daemonIsRoot() && req.peer && req.peer.uid !== 0 ? req.peer : null;
  if (peerUser && body.sandbox?.policy?.env?.pass?.length) {
    throw new PlanterError(
      "E_UNAUTHORIZED_PEER",
      `env.pass hands planterd's own (root's) variables to jobs: only root may name them (${body.sandbox.policy.env.pass.join(", ")})`,
      { hint: "set values with env.set or --env instead" },
    );
  }
  if (body.sandbox?.policy) {
    // A cell's policy is checked whole now (paths resolved, nothing unsafe), not at its first job.
    const why = unsafePolicy(cellPolicy(ctx, body.sandbox.policy), protectedPaths(ctx));
    if (why) throw new PlanterError("E_BAD_REQUEST", why, { hint: "choose another path" });
  }
  if (getCell(ctx.db, body.name)) {
    throw conflict(
      `cell ${JSON.stringify(body.name)} already exists`,
      `see it with \`planter cell show ${body.name}\``,
    );
  }
  let dir: string;
  const managed = body.dir === undefined;
  if (body.dir !== undefined) {
    if (!existsSync(body.dir) || !statSync(body.dir).isDirectory()) {
      throw new PlanterError("E_BAD_REQUEST", `cell dir ${body.dir} is not an existing directory`, {
        hint: `create it first: mkdir -p ${body.dir}`,
      });
    }
    const planted = plantedSymlink(body.dir, writableTrees(ctx));
    if (planted) {
      throw new PlanterError("E_BAD_REQUEST", `cell dir ${body.dir} is refused: ${planted}`, {
        hint: "a symlink a job could have planted is never followed; name the directory itself",
      });
    }
    // Stored canonical: a trailing slash, `..` or a symlink never makes two names for one dir.
    dir = realpathSync(body.dir);
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
  } else {
    dir = join(stateFiles(ctx.paths.stateDir).cells, body.name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  const cell: CellRow = {
    name: body.name,
    dir,
    managed,
    env: body.env ?? {},
    limits: body.limits ?? {},
    sandbox: body.sandbox ?? {},
    created_at: Date.now(),
    owner_uid: ownerFor(ctx, req.peer, managed ? null : dir),
  };
  ctx.write((ev) => {
    insertCell(ctx.db, cell);
    if (body.request_ref) recordRef(ctx.db, "cells", body.request_ref, ref.hash, cell.name);
    ev.push({ kind: "cell.created", subject: `cell/${cell.name}`, data: { dir, managed, ...req.audit } });
  });
  return ok(cellView(ctx.db, cell), 201);
}

export function list(ctx: Context, _req: Req<Routes["listCells"]>): Reply<{ cells: Cell[] }> {
  return ok({ cells: listCells(ctx.db).map((c) => cellView(ctx.db, c)) });
}

export function show(ctx: Context, req: Req<Routes["getCell"]>): Reply<Cell> {
  return ok(cellView(ctx.db, requireCell(ctx, req.params.name)));
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
