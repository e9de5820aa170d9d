/** The import's plan: what each legacy item becomes, against what the database holds. */

import type { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import type { JobState } from "../../api/contract.ts";
import { liveness, type ProcessFacts } from "./liveness.ts";
import { cellNameFor, droppedLimits, exitedOutcome, freeName, type Outcome } from "./map.ts";
import type { LegacyCellFile, LegacyJobFile, LegacyTree } from "./schema.ts";
// ---------------------------------------------------------------------------------------------
// Planning and applying

/** One legacy item and what the import does (or did) with it. */
export interface ImportItem {
  kind: "cell" | "job";
  legacy_id: string;
  path: string;
  /** import: new row; merge: mapped onto an existing cell; skip: left alone. */
  action: "import" | "merge" | "skip";
  /** The planter cell (cells) or job id (jobs). */
  target: string | null;
  /** Jobs: the state recorded; `running` means re-adopted. */
  state?: JobState;
  /** Why a skipped item was skipped. */
  skip?: "already_imported" | "id_taken" | "no_cell";
  note: string | null;
}

/** What the database already holds, as far as an import cares. */
export interface Existing {
  cells: Map<string, string>;
  jobIds: Set<string>;
  imported: Map<string, { target: string; root: string }>;
}

/** Read what is already in the database (any schema version that has cells and jobs). */
export function existingState(db: Database | null): Existing {
  const ex: Existing = { cells: new Map(), jobIds: new Set(), imported: new Map() };
  if (!db) return ex;
  const has = (t: string) => db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(t) !== null;
  if (has("cells")) {
    for (const r of db.query("SELECT name, dir FROM cells").all() as { name: string; dir: string }[]) {
      ex.cells.set(r.name, r.dir);
    }
  }
  if (has("jobs")) for (const r of db.query("SELECT id FROM jobs").all() as { id: string }[]) ex.jobIds.add(r.id);
  if (has("legacy_imports")) {
    const rows = db.query("SELECT kind, legacy_id, target, root FROM legacy_imports").all() as {
      kind: string;
      legacy_id: string;
      target: string;
      root: string;
    }[];
    for (const r of rows) ex.imported.set(`${r.kind}:${r.legacy_id}`, { target: r.target, root: r.root });
  }
  return ex;
}

/** A planned import: the items, and per item what to write. */
export interface Plan {
  items: ImportItem[];
  cells: { item: ImportItem; cell: LegacyCellFile }[];
  jobs: { item: ImportItem; job: LegacyJobFile; outcome: Outcome | null; token: string | null; cell: string }[];
}

function alreadyNote(ex: Existing, key: string, tree: LegacyTree, what: string): string {
  const prior = ex.imported.get(key);
  if (!prior) return "";
  return prior.root === tree.root
    ? `already imported as ${what} ${prior.target}`
    : `an item with this id was imported from ${prior.root} already (as ${what} ${prior.target})`;
}

type ImportOptions = { toleranceMs?: number; facts?: (pid: number) => ProcessFacts | null };

/** Decide what happens to every legacy item; reads /proc for running jobs, writes nothing. */
export function planImport(tree: LegacyTree, ex: Existing, opts: ImportOptions = {}): Plan {
  const plan: Plan = { items: [], cells: [], jobs: [] };
  const names = new Map(ex.cells);
  /** Legacy cell id → planter cell name, for this run and earlier ones. */
  const cellOf = new Map<string, string>();
  for (const [key, v] of ex.imported) if (key.startsWith("cell:")) cellOf.set(key.slice(5), v.target);
  for (const entry of tree.cells) planCell(plan, tree, ex, names, cellOf, entry);
  for (const entry of tree.jobs) planJob(plan, tree, ex, cellOf, opts, entry);
  return plan;
}

/**
 * A legacy cell: skipped when imported before; merged into a cell of the same name and dir;
 * else imported, under a free name when its own is taken by another dir. `names` and `cellOf`
 * learn the name it gets.
 */
function planCell(
  plan: Plan,
  tree: LegacyTree,
  ex: Existing,
  names: Map<string, string>,
  cellOf: Map<string, string>,
  { path, cell }: LegacyTree["cells"][number],
): void {
  const base = { kind: "cell" as const, legacy_id: cell.id, path };
  const key = `cell:${cell.id}`;
  if (ex.imported.has(key)) {
    plan.items.push({
      ...base,
      action: "skip",
      target: ex.imported.get(key)?.target ?? null,
      note: alreadyNote(ex, key, tree, "cell"),
    });
    return;
  }
  const wanted = cellNameFor(cell.spec.name, cell.id);
  const notes: string[] = [];
  if (wanted !== cell.spec.name) notes.push(`${JSON.stringify(cell.spec.name)} is not a valid cell name`);
  let name = wanted;
  const dirThere = names.get(wanted);
  let action: ImportItem["action"] = "import";
  if (dirThere !== undefined && dirThere === cell.dir) {
    action = "merge";
    notes.push(`cell ${wanted} already exists with the same dir: its jobs join it, its settings are kept`);
  } else if (dirThere !== undefined) {
    name = freeName(wanted, (n) => names.has(n));
    notes.push(`cell ${wanted} already exists with another dir (${dirThere})`);
  }
  if (action === "import" && !existsSync(cell.dir)) notes.push(`its dir ${cell.dir} does not exist`);
  names.set(name, cell.dir);
  cellOf.set(cell.id, name);
  const item: ImportItem = { ...base, action, target: name, note: notes.length ? notes.join("; ") : null };
  plan.items.push(item);
  plan.cells.push({ item, cell });
}

/** A legacy job: skipped (imported before, its id taken, its cell missing), else imported as it ended or adopted running. */
function planJob(
  plan: Plan,
  tree: LegacyTree,
  ex: Existing,
  cellOf: Map<string, string>,
  opts: ImportOptions,
  { path, job }: LegacyTree["jobs"][number],
): void {
  const base = { kind: "job" as const, legacy_id: job.id, path };
  const skip = jobSkip(tree, ex, cellOf, job);
  if (skip) {
    plan.items.push({ ...base, action: "skip", ...skip });
    return;
  }
  const cell = cellOf.get(job.cell_id) as string;
  const { outcome, token } = jobOutcome(job, opts);
  const notes: string[] = [];
  const dropped = droppedLimits(job.command.limits);
  if (dropped.length) notes.push(`limits not understood and dropped: ${dropped.join(", ")}`);
  if (outcome?.message) notes.push(outcome.message);
  const item: ImportItem = {
    ...base,
    action: "import",
    target: job.id,
    state: outcome ? outcome.state : "running",
    note: notes.length ? notes.join("; ") : null,
  };
  plan.items.push(item);
  plan.jobs.push({ item, job, outcome, token, cell });
}

/** Why a legacy job is not imported (imported before, its id taken, its cell missing), or null. */
function jobSkip(
  tree: LegacyTree,
  ex: Existing,
  cellOf: Map<string, string>,
  job: LegacyJobFile,
): Pick<ImportItem, "skip" | "target" | "note"> | null {
  const key = `job:${job.id}`;
  if (ex.imported.has(key))
    return { skip: "already_imported", target: job.id, note: alreadyNote(ex, key, tree, "job") };
  if (ex.jobIds.has(job.id)) return { skip: "id_taken", target: job.id, note: `a job ${job.id} exists already` };
  if (!cellOf.has(job.cell_id)) {
    return {
      skip: "no_cell",
      target: null,
      note: `its cell ${job.cell_id} is missing or malformed (fix cells/${job.cell_id}/cell.json and run migrate again)`,
    };
  }
  return null;
}

/** How a legacy job ended, or (running and still its own process) the token to adopt it by. */
function jobOutcome(job: LegacyJobFile, opts: ImportOptions): { outcome: Outcome | null; token: string | null } {
  if (job.status.type !== "running") {
    return { outcome: exitedOutcome(job.status.code ?? null, job.termination_reason), token: null };
  }
  const l = liveness(job, opts.toleranceMs, opts.facts);
  if (l.alive) return { outcome: null, token: l.token };
  return { outcome: { state: "lost", reason: "lost", exit_code: null, signal: null, message: l.why }, token: null };
}

/** Counts of an import (or of a dry run's plan). */
export interface ImportCounts {
  cells: { imported: number; merged: number; skipped: number };
  jobs: { imported: number; adopted: number; lost: number; skipped: number };
}

/** Count a plan's items. */
export function countItems(items: ImportItem[]): ImportCounts {
  const c: ImportCounts = {
    cells: { imported: 0, merged: 0, skipped: 0 },
    jobs: { imported: 0, adopted: 0, lost: 0, skipped: 0 },
  };
  for (const i of items) {
    if (i.kind === "cell") {
      if (i.action === "import") c.cells.imported++;
      else if (i.action === "merge") c.cells.merged++;
      else c.cells.skipped++;
    } else if (i.action === "skip") c.jobs.skipped++;
    else {
      c.jobs.imported++;
      if (i.state === "running") c.jobs.adopted++;
      if (i.state === "lost") c.jobs.lost++;
    }
  }
  return c;
}

/**
 * Apply a plan to a database at the latest schema. Cells first, then jobs; each item in one
 * immediate transaction with its `legacy_imports` record and its `*.imported` event. A job's
 * logs are in its job dir before its row is committed; if the commit fails the dir is removed
 * and the error thrown (items committed before stay, and a re-run carries on).
 */
