import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import * as v from "valibot";
import { summarizeIssues } from "../../api/contract.ts";
import { LegacyCellFile, LegacyJobFile, type LegacyTree, type Malformed } from "./schema.ts";

const byNumber = (a: string, b: string) =>
  Number(a.replace(/\D/g, "")) - Number(b.replace(/\D/g, "")) || (a < b ? -1 : 1);

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort(byNumber);
  } catch {
    return [];
  }
}

type Parsed<T> = { ok: true; value: T } | { ok: false; malformed: Malformed };

function parseFile<S extends v.GenericSchema>(path: string, schema: S, expectedId: string): Parsed<v.InferOutput<S>> {
  const bad = (message: string): Parsed<never> => ({ ok: false, malformed: { path, message } });
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return bad(err.code ? `cannot read it: ${err.code}` : `not JSON: ${err.message}`);
  }
  const r = v.safeParse(schema, raw);
  if (!r.success) return bad(summarizeIssues(r.issues));
  const id = (r.output as { id: string }).id;
  if (id !== expectedId) return bad(`× its id ${id} does not match its file name (${expectedId})`);
  return { ok: true, value: r.output };
}

/** Read and validate every file of a legacy tree; nothing is written. */
export function readLegacyTree(root: string): LegacyTree {
  const tree: LegacyTree = { root, cells: [], jobs: [], malformed: [] };
  const cellsDir = join(root, "cells");
  for (const name of listDir(cellsDir)) {
    const dir = join(cellsDir, name);
    if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) continue;
    const path = join(dir, "cell.json");
    if (!existsSync(path)) {
      tree.malformed.push({ path, message: "× missing: every legacy cell dir holds a cell.json" });
      continue;
    }
    const r = parseFile(path, LegacyCellFile, name);
    if (r.ok) tree.cells.push({ path, cell: r.value });
    else tree.malformed.push(r.malformed);
  }
  const jobsDir = join(root, "jobs");
  for (const name of listDir(jobsDir)) {
    if (!name.endsWith(".json")) continue;
    const path = join(jobsDir, name);
    const r = parseFile(path, LegacyJobFile, name.slice(0, -".json".length));
    if (r.ok) tree.jobs.push({ path, job: r.value });
    else tree.malformed.push(r.malformed);
  }
  return tree;
}

/** True when `root` looks like a legacy state tree (a `cells` or `jobs` dir). */
export function isLegacyTree(root: string): boolean {
  return existsSync(join(root, "cells")) || existsSync(join(root, "jobs"));
}
