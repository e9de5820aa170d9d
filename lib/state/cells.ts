/** The cells table. */
import type { Database } from "bun:sqlite";
import * as v from "valibot";
import { type Cell, Limits, SandboxSpec } from "../api/contract.ts";
import { jsonColumn, StringRecord } from "./json.ts";

/** A cell row with its JSON columns decoded. */
export interface CellRow {
  name: string;
  dir: string;
  managed: boolean;
  env: Record<string, string>;
  limits: Limits;
  sandbox: SandboxSpec;
  created_at: number;
  /** The uid the cell belongs to (its jobs run as it for a root peer); null: before owners were kept. */
  owner_uid: number | null;
}

interface RawCell {
  name: string;
  dir: string;
  managed: number;
  env: string;
  limits: string;
  sandbox: string;
  created_at: number;
  owner_uid: number | null;
}

const LimitsLoose = v.looseObject(Limits.entries);
const SandboxLoose = v.looseObject(SandboxSpec.entries);

function decode(r: RawCell): CellRow {
  const where = `cell ${r.name}`;
  return {
    name: r.name,
    dir: r.dir,
    managed: r.managed === 1,
    env: jsonColumn(StringRecord, r.env, `${where} env`),
    limits: jsonColumn(LimitsLoose, r.limits, `${where} limits`),
    sandbox: jsonColumn(SandboxLoose, r.sandbox, `${where} sandbox`),
    created_at: r.created_at,
    owner_uid: r.owner_uid ?? null,
  };
}

export function getCell(db: Database, name: string): CellRow | null {
  const r = db.query("SELECT * FROM cells WHERE name = ?").get(name) as RawCell | null;
  return r ? decode(r) : null;
}

export function listCells(db: Database): CellRow[] {
  return (db.query("SELECT * FROM cells ORDER BY name").all() as RawCell[]).map(decode);
}

/**
 * Every cell's name, dir and whether it is managed, without the JSON columns: what each job launch
 * looks at (other cells to hide, trees jobs write). Reading whole rows made a launch cost the size
 * of every cell's env and policy.
 */
export function listCellDirs(db: Database): { name: string; dir: string; managed: boolean }[] {
  return (db.query("SELECT name, dir, managed FROM cells ORDER BY name").all() as RawCell[]).map((r) => ({
    name: r.name,
    dir: r.dir,
    managed: r.managed === 1,
  }));
}

/** How many cells `uid` owns. */
export function countCellsOf(db: Database, uid: number): number {
  return (db.query("SELECT COUNT(*) AS n FROM cells WHERE owner_uid = ?").get(uid) as { n: number }).n;
}

export function insertCell(db: Database, c: CellRow): void {
  db.query(
    "INSERT INTO cells (name, dir, managed, env, limits, sandbox, created_at, owner_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
  ).run(
    c.name,
    c.dir,
    c.managed ? 1 : 0,
    JSON.stringify(c.env),
    JSON.stringify(c.limits),
    JSON.stringify(c.sandbox),
    c.created_at,
    c.owner_uid,
  );
}

/** Replace a cell's sandbox settings (mode and policy). */
export function updateCellSandbox(db: Database, name: string, sandbox: SandboxSpec): void {
  db.query("UPDATE cells SET sandbox = ? WHERE name = ?").run(JSON.stringify(sandbox), name);
}

export function deleteCell(db: Database, name: string): void {
  db.query("DELETE FROM cells WHERE name = ?").run(name);
}

/** Running and total job counts per cell. */
export function jobCounts(db: Database, name: string): { running: number; total: number } {
  // Two counts, each from an index alone: one query summing the states read every row of the
  // cell (~45 ms for 100k jobs). The total counts entries of jobs_cell; the running ones come
  // from jobs_state (`+cell` keeps the planner off jobs_cell, where it would read every row).
  const total = (db.query("SELECT COUNT(*) AS n FROM jobs WHERE cell = ?").get(name) as { n: number }).n;
  const running = (
    db.query("SELECT COUNT(*) AS n FROM jobs WHERE state IN ('pending','running') AND +cell = ?").get(name) as {
      n: number;
    }
  ).n;
  return { running, total };
}

/** The API view of a cell; `effective`: the sandbox its jobs get (the daemon works it out from its config). */
export function cellView(db: Database, c: CellRow, effective: Cell["effective_sandbox"]): Cell {
  return {
    name: c.name,
    dir: c.dir,
    managed: c.managed,
    env: c.env,
    limits: c.limits,
    sandbox: c.sandbox,
    created_at: new Date(c.created_at).toISOString(),
    owner_uid: c.owner_uid,
    jobs: jobCounts(db, c.name),
    effective_sandbox: effective,
  };
}
