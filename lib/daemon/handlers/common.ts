/**
 * What the handlers share: the cell or job a request names, the default cell, replays of a
 * request_ref, and the config's sandbox-mode ceiling. One module, so handlers import it and
 * never each other.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { CELL_NAME_RE, type SandboxMode } from "../../api/contract.ts";
import { badRequest, notFound, PlanterError } from "../../api/errors.ts";
import { stateFiles } from "../../paths.ts";
import { type CellRow, getCell, insertCell } from "../../state/cells.ts";
import { bodyHash, lookupRef } from "../../state/idempotency.ts";
import { getJob, type JobRow } from "../../state/jobs.ts";
import type { Context } from "../context.ts";
import { daemonIsRoot, ownerFor } from "../launch.ts";
import type { Peer } from "../peer.ts";

/** The job, or E_NOT_FOUND with a hint. */
export function requireJob(ctx: Context, id: string): JobRow {
  const job = getJob(ctx.db, id);
  if (!job) throw notFound(`no job ${JSON.stringify(id)}`, "list jobs with `planter job ls`");
  return job;
}

/** The cell, or E_NOT_FOUND with a hint. */
export function requireCell(ctx: Context, name: string): CellRow {
  if (!CELL_NAME_RE.test(name)) {
    throw new PlanterError(
      "E_BAD_REQUEST",
      `${JSON.stringify(name)} is not a valid cell name: a cell name is 1-63 characters of a-z 0-9 . _ - starting with a letter or digit`,
      { hint: "list cells with `planter cell ls`" },
    );
  }
  const cell = getCell(ctx.db, name);
  if (!cell) throw notFound(`no cell named ${JSON.stringify(name)}`, `create it with \`planter cell create ${name}\``);
  return cell;
}

/** A replayed request_ref whose first result was removed since: never redone. */
export function goneResult(ref: string, what: string): PlanterError {
  return new PlanterError(
    "E_CONFLICT",
    `request_ref ${JSON.stringify(ref)} created ${what}, which has been removed since`,
    {
      hint: "use a new request_ref to create it again",
      details: { request_ref: ref, first_result: what.split(" ")[1] },
    },
  );
}

/**
 * A request made with a request_ref: `prior()` is the id its first request created (null when
 * there was none), `hash` the body's, for recording the first result.
 * E_IDEMPOTENCY_CONFLICT when the ref was used with another body.
 */
export function requestRef(ctx: Context, scope: "jobs" | "cells", ref: string | undefined, raw: unknown) {
  const hash = bodyHash(raw as Record<string, unknown>);
  return { hash, prior: () => (ref ? lookupRef(ctx.db, scope, ref, hash) : null) };
}

/** Refuse a sandbox mode the daemon's config does not allow. */
export function checkMode(ctx: Context, mode: SandboxMode, where: string): void {
  const allowed = ctx.config.sandbox.allowed_modes;
  if (!allowed.includes(mode)) {
    throw badRequest(
      `sandbox mode ${mode} (${where}) is not allowed by planterd's config`,
      `allowed: ${allowed.join(", ")} (config [sandbox] allowed_modes)`,
    );
  }
}

/**
 * The default cell of a peer: `[jobs] default_cell`, except that when planterd is root a
 * non-root peer gets one of its own (`default-u<uid>`): cells belong to one user.
 */
export function defaultCellName(ctx: Context, peer: Peer | null, base = ctx.config.jobs.default_cell): string {
  const name = base;
  return daemonIsRoot() && peer && peer.uid !== 0 ? `${name}-u${peer.uid}`.slice(0, 63) : name;
}

/** Create a managed cell (its dir under the state dir) if it does not exist yet. */
export function ensureCell(
  ctx: Context,
  name: string,
  peer: Peer | null = null,
  sandbox: CellRow["sandbox"] = {},
): CellRow {
  const existing = getCell(ctx.db, name);
  if (existing) return existing;
  const dir = join(stateFiles(ctx.paths.stateDir).cells, name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cell: CellRow = {
    name,
    dir,
    managed: true,
    env: {},
    limits: {},
    sandbox,
    created_at: Date.now(),
    owner_uid: ownerFor(ctx, peer, null),
  };
  ctx.write((ev) => {
    if (getCell(ctx.db, name)) return;
    insertCell(ctx.db, cell);
    ev.push({ kind: "cell.created", subject: `cell/${name}`, data: { dir, managed: true } });
  });
  return getCell(ctx.db, name) as CellRow;
}
