/**
 * Import of the first prototype's JSON state (`~/.planter/state`): `cells/<cell-id>/cell.json`,
 * `jobs/<job-id>.json`, `logs/<job-id>.stdout.log` / `.stderr.log`. One way (the legacy tree is
 * only read), idempotent (every imported item is recorded in `legacy_imports`), one transaction
 * per item with its log files copied before the row is committed. plans/design.md "migrate (#6)".
 */
import type { Database } from "bun:sqlite";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, join } from "node:path";
import * as v from "valibot";
import { CELL_NAME_RE, type JobState, Limits, type Reason, summarizeIssues } from "../api/contract.ts";
import { procStat, signalName, startTime } from "../jobs/proc.ts";
import { jobFiles } from "../jobs/recorder.ts";
import { jobDir } from "../paths.ts";
import { insertCell } from "./cells.ts";
import { appendEvent } from "./events.ts";

/** Legacy cell ids: `cell-<n>`. */
export const LEGACY_CELL_ID = /^cell-\d{1,18}$/;
/** Legacy job ids: `job-<n>`, kept on import; planter's own start with `j-`, so they never collide. */
export const LEGACY_JOB_ID = /^job-\d{1,18}$/;

/** True for a job imported from the prototype (its id kept): such a job has no exit-status recorder. */
export const isLegacyJobId = (id: string) => LEGACY_JOB_ID.test(id);

const Millis = v.pipe(v.number(), v.integer(), v.minValue(0));
const Text = v.pipe(
  v.string(),
  v.check((s) => !s.includes("\0"), "NUL bytes are not allowed"),
);
const StringMap = v.record(Text, Text);

/** `cells/<cell-id>/cell.json` */
export const LegacyCellFile = v.object({
  id: v.pipe(v.string(), v.regex(LEGACY_CELL_ID, "a legacy cell id is cell-<n>")),
  spec: v.object({ name: Text, env: v.optional(v.nullable(StringMap)) }),
  created_at_ms: Millis,
  dir: v.pipe(
    Text,
    v.check((p) => p.startsWith("/"), "must be an absolute path"),
  ),
});
export type LegacyCellFile = v.InferOutput<typeof LegacyCellFile>;

/** `jobs/<job-id>.json` */
export const LegacyJobFile = v.object({
  id: v.pipe(v.string(), v.regex(LEGACY_JOB_ID, "a legacy job id is job-<n>")),
  cell_id: v.pipe(v.string(), v.regex(LEGACY_CELL_ID, "a legacy cell id is cell-<n>")),
  command: v.object({
    argv: v.pipe(v.array(Text), v.minLength(1, "argv needs a program")),
    cwd: Text,
    env: v.optional(v.nullable(StringMap)),
    limits: v.optional(v.nullable(v.record(v.string(), v.unknown()))),
  }),
  stdout_path: v.optional(v.nullable(Text)),
  stderr_path: v.optional(v.nullable(Text)),
  started_at_ms: Millis,
  finished_at_ms: v.optional(v.nullable(Millis)),
  pid: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1)))),
  status: v.variant("type", [
    v.object({ type: v.literal("running") }),
    v.object({ type: v.literal("exited"), code: v.optional(v.nullable(v.pipe(v.number(), v.integer()))) }),
  ]),
  termination_reason: v.optional(v.nullable(v.string())),
});
export type LegacyJobFile = v.InferOutput<typeof LegacyJobFile>;

/** A legacy file that could not be read: its path and what is wrong, for people. */
export interface Malformed {
  path: string;
  message: string;
}

/** What the legacy tree holds: valid cells and jobs (ordered by number), and every malformed file. */
export interface LegacyTree {
  root: string;
  cells: { path: string; cell: LegacyCellFile }[];
  jobs: { path: string; job: LegacyJobFile }[];
  malformed: Malformed[];
}

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

// ---------------------------------------------------------------------------------------------
// Cells

/**
 * A valid planter cell name for a legacy `spec.name`: lowercased, runs of other characters
 * turned into `-`, leading punctuation dropped, at most 63 characters; the legacy id when
 * nothing is left.
 */
export function cellNameFor(name: string, legacyId: string): string {
  if (CELL_NAME_RE.test(name)) return name;
  const cleaned = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+/, "")
    .slice(0, 63)
    .replace(/-+$/, "");
  return CELL_NAME_RE.test(cleaned) ? cleaned : legacyId;
}

/** `name-legacy`, then `name-legacy-2`, … : the first that `taken` does not hold. */
function freeName(name: string, taken: (n: string) => boolean): string {
  for (let n = 1; ; n++) {
    const suffix = n === 1 ? "-legacy" : `-legacy-${n}`;
    const candidate = `${name.slice(0, 63 - suffix.length).replace(/[-._]+$/, "")}${suffix}`;
    if (!taken(candidate)) return candidate;
  }
}

// ---------------------------------------------------------------------------------------------
// Jobs: outcome of a finished legacy job

const LIMIT_OR_KILL: ReadonlySet<Reason> = new Set([
  "terminated_by_user",
  "forced_kill",
  "timeout",
  "memory_limit",
  "log_quota",
]);

/** Legacy termination reasons (and likely spellings) → planter reasons. */
const REASON_ALIASES: Record<string, Reason> = {
  exited: "exited",
  exit: "exited",
  completed: "exited",
  finished: "exited",
  terminated_by_user: "terminated_by_user",
  killed: "terminated_by_user",
  killed_by_user: "terminated_by_user",
  user_kill: "terminated_by_user",
  user: "terminated_by_user",
  terminated: "terminated_by_user",
  cancelled: "terminated_by_user",
  canceled: "terminated_by_user",
  forced_kill: "forced_kill",
  force_kill: "forced_kill",
  force_killed: "forced_kill",
  sigkill: "forced_kill",
  timeout: "timeout",
  timed_out: "timeout",
  time_limit: "timeout",
  memory_limit: "memory_limit",
  oom: "memory_limit",
  out_of_memory: "memory_limit",
  oom_killed: "memory_limit",
  log_quota: "log_quota",
  log_limit: "log_quota",
  output_limit: "log_quota",
  sandbox_error: "sandbox_error",
  spawn_error: "spawn_error",
  spawn_failed: "spawn_error",
  failed_to_start: "spawn_error",
  lost: "lost",
};

/** The planter reason for a legacy `termination_reason`, or null when there is none. */
export function mapReason(reason: string): Reason | null {
  return (
    REASON_ALIASES[
      reason
        .trim()
        .toLowerCase()
        .replace(/[\s-]+/g, "_")
    ] ?? null
  );
}

/** How a finished legacy job is recorded in planter. */
export interface Outcome {
  state: JobState;
  reason: Reason;
  exit_code: number | null;
  signal: string | null;
  message: string | null;
}

/**
 * The outcome of a job the prototype recorded as exited, like planter's own: code 0 →
 * `exited`, another code → `failed` (reason `exited`); a kill or limit reason → `killed` with
 * that reason; spawn and sandbox errors → `failed` with theirs. An unknown reason is kept in
 * the message.
 */
export function exitedOutcome(code: number | null, termination: string | null | undefined): Outcome {
  const mapped = termination ? mapReason(termination) : null;
  const note = termination && !mapped ? `legacy termination_reason ${JSON.stringify(termination)}` : null;
  const sig = code !== null && code > 128 ? signalName(code - 128) : null;
  if (mapped && LIMIT_OR_KILL.has(mapped)) {
    return { state: "killed", reason: mapped, exit_code: code, signal: sig, message: note };
  }
  if (mapped === "spawn_error" || mapped === "sandbox_error") {
    return { state: "failed", reason: mapped, exit_code: code, signal: null, message: note };
  }
  if (mapped === "lost") {
    return { state: "lost", reason: "lost", exit_code: code, signal: null, message: "the prototype lost this job" };
  }
  if (code === null) {
    return {
      state: "failed",
      reason: "exited",
      exit_code: null,
      signal: null,
      message: note ?? "the prototype recorded no exit code (the job was probably killed by a signal)",
    };
  }
  return { state: code === 0 ? "exited" : "failed", reason: "exited", exit_code: code, signal: null, message: note };
}

// ---------------------------------------------------------------------------------------------
// Jobs: is a job recorded as running still that process?

/** Tolerance between a legacy `started_at_ms` and the kernel's start time of its pid. */
export const START_TOLERANCE_MS = 3000;

/** /proc/<pid>/stat counts start times in USER_HZ ticks: 100 on every Linux ABI planter targets. */
const USER_HZ = 100;

/** What the kernel says about a live process: when it started, its argv, and planter's start-time token. */
export interface ProcessFacts {
  startMs: number;
  argv: string[] | null;
  token: string;
}

function bootTimeMs(): number | null {
  try {
    const m = /^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"));
    return m ? Number(m[1]) * 1000 : null;
  } catch {
    return null;
  }
}

/** Facts of a live (non-zombie) process, or null when it is gone. */
export function processFacts(pid: number): ProcessFacts | null {
  if (process.platform === "linux") {
    const st = procStat(pid);
    const boot = bootTimeMs();
    if (!st || st.state === "Z" || st.state === "X" || boot === null) return null;
    let argv: string[] | null = null;
    try {
      const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      argv = raw.length ? raw.replace(/\0$/, "").split("\0") : [];
    } catch {
      argv = null;
    }
    return { startMs: boot + (Number(st.startTime) * 1000) / USER_HZ, argv, token: st.startTime };
  }
  // macOS: `ps` (second precision, and argv joined by spaces). Never run on macOS yet.
  const token = startTime(pid);
  if (!token) return null;
  const r = Bun.spawnSync(["ps", "-ww", "-o", "args=", "-p", String(pid)], { stdout: "pipe", stderr: "ignore" });
  const args = r.exitCode === 0 ? r.stdout.toString().trim() : "";
  return { startMs: Date.parse(token), argv: args ? args.split(" ") : null, token };
}

/**
 * Whether a process's argv is the job's: equal, or ending with the job's argv where the
 * program may appear as a full path (`cargo` run as `/usr/bin/cargo`) and an interpreter may
 * come first (a `#!` script shows as `/bin/sh ./build.sh`).
 */
export function argvMatches(proc: string[], argv: string[]): boolean {
  const k = proc.length - argv.length;
  if (k < 0 || argv.length === 0) return false;
  if (basename(proc[k] ?? "") !== basename(argv[0] ?? "")) return false;
  return argv.every((a, i) => i === 0 || proc[k + i] === a);
}

/** The verdict on a job recorded as running: adopt it (with its start-time token) or record it lost, and why. */
export type Liveness = { alive: true; token: string } | { alive: false; why: string };

/**
 * A job recorded as running is adopted only when its pid is provably the job: alive, started
 * within `toleranceMs` of `started_at_ms`, and running the job's argv. Anything less is `lost`:
 * planter must never signal a process that is not the job.
 */
export function liveness(
  job: Pick<LegacyJobFile, "pid" | "started_at_ms" | "command">,
  toleranceMs = START_TOLERANCE_MS,
  facts: (pid: number) => ProcessFacts | null = processFacts,
): Liveness {
  if (!job.pid) return { alive: false, why: "recorded running without a pid, so whether it still runs is unknowable" };
  const f = facts(job.pid);
  if (!f) return { alive: false, why: `recorded running, but pid ${job.pid} is gone; its exit code is unknowable` };
  const drift = Math.abs(f.startMs - job.started_at_ms);
  if (drift > toleranceMs) {
    return {
      alive: false,
      why:
        `recorded running, but pid ${job.pid} now belongs to another process (started ${new Date(f.startMs).toISOString()}, ` +
        `the job ${new Date(job.started_at_ms).toISOString()}); the job itself is gone`,
    };
  }
  if (f.argv === null || !argvMatches(f.argv, job.command.argv)) {
    return {
      alive: false,
      why:
        `pid ${job.pid} is alive and started with the job, but runs ${f.argv === null ? "an unreadable command" : JSON.stringify(f.argv)}, ` +
        "not the job's argv; planter does not adopt (or ever signal) a process it cannot prove is the job",
    };
  }
  return { alive: true, token: f.token };
}

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

/** Decide what happens to every legacy item; reads /proc for running jobs, writes nothing. */
export function planImport(
  tree: LegacyTree,
  ex: Existing,
  opts: { toleranceMs?: number; facts?: (pid: number) => ProcessFacts | null } = {},
): Plan {
  const plan: Plan = { items: [], cells: [], jobs: [] };
  const names = new Map(ex.cells);
  /** Legacy cell id → planter cell name, for this run and earlier ones. */
  const cellOf = new Map<string, string>();
  for (const [key, v] of ex.imported) if (key.startsWith("cell:")) cellOf.set(key.slice(5), v.target);

  for (const { path, cell } of tree.cells) {
    const base = { kind: "cell" as const, legacy_id: cell.id, path };
    const key = `cell:${cell.id}`;
    if (ex.imported.has(key)) {
      plan.items.push({
        ...base,
        action: "skip",
        target: ex.imported.get(key)?.target ?? null,
        note: alreadyNote(ex, key, tree, "cell"),
      });
      continue;
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

  for (const { path, job } of tree.jobs) {
    const base = { kind: "job" as const, legacy_id: job.id, path };
    const key = `job:${job.id}`;
    if (ex.imported.has(key)) {
      const note = alreadyNote(ex, key, tree, "job");
      plan.items.push({ ...base, action: "skip", skip: "already_imported", target: job.id, note });
      continue;
    }
    if (ex.jobIds.has(job.id)) {
      plan.items.push({
        ...base,
        action: "skip",
        skip: "id_taken",
        target: job.id,
        note: `a job ${job.id} exists already`,
      });
      continue;
    }
    const cell = cellOf.get(job.cell_id);
    if (cell === undefined) {
      plan.items.push({
        ...base,
        action: "skip",
        skip: "no_cell",
        target: null,
        note: `its cell ${job.cell_id} is missing or malformed (fix cells/${job.cell_id}/cell.json and run migrate again)`,
      });
      continue;
    }
    let outcome: Outcome | null = null;
    let token: string | null = null;
    const notes: string[] = [];
    if (job.status.type === "running") {
      const l = liveness(job, opts.toleranceMs, opts.facts);
      if (l.alive) token = l.token;
      else outcome = { state: "lost", reason: "lost", exit_code: null, signal: null, message: l.why };
    } else {
      outcome = exitedOutcome(job.status.code ?? null, job.termination_reason);
    }
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
  return plan;
}

/** The legacy limits planter understands (timeout_ms, max_rss_bytes, max_log_bytes with valid values). */
export function importLimits(raw: Record<string, unknown> | null | undefined): Limits {
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(raw ?? {})) {
    if (val === null || val === undefined) continue;
    if (v.safeParse(Limits, { [k]: val }).success) out[k] = val;
  }
  return out as Limits;
}

function droppedLimits(raw: Record<string, unknown> | null | undefined): string[] {
  const kept = importLimits(raw);
  return Object.entries(raw ?? {})
    .filter(([k, val]) => val !== null && val !== undefined && !(k in kept))
    .map(([k]) => k);
}

/** Where a legacy job's stream log is: `logs/<id>.<stream>.log` in the tree, else its recorded path. */
export function legacyLog(root: string, job: LegacyJobFile, stream: "stdout" | "stderr"): string | null {
  const candidates = [
    join(root, "logs", `${job.id}.${stream}.log`),
    stream === "stdout" ? job.stdout_path : job.stderr_path,
  ];
  for (const c of candidates) if (c && statSync(c, { throwIfNoEntry: false })?.isFile()) return c;
  return null;
}

/**
 * Put a legacy log into the job dir. A finished job's log is copied. A re-adopted job still
 * writes to its legacy file, so that file is hard-linked (same inode: `planter logs -f` sees
 * what it writes next); across file systems it is copied, and later output stays in the
 * legacy file (said in the note).
 */
function placeLog(src: string | null, dst: string, live: boolean, notes: string[], stream: string): void {
  if (src === null) {
    writeFileSync(dst, "", { mode: 0o600 });
    notes.push(`no ${stream} log found`);
    return;
  }
  if (live) {
    try {
      linkSync(src, dst);
      return;
    } catch {
      notes.push(`${stream} copied, not linked: what the job writes next stays in ${src}`);
    }
  }
  copyFileSync(src, dst);
  chmodSync(dst, 0o600);
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
export function applyImport(db: Database, stateDir: string, tree: LegacyTree, plan: Plan, now = Date.now()): void {
  const record = db.query(
    "INSERT INTO legacy_imports (kind, legacy_id, target, root, imported_at) VALUES (?, ?, ?, ?, ?)",
  );
  for (const { item, cell } of plan.cells) {
    const name = item.target as string;
    db.transaction(() => {
      if (item.action === "import") {
        insertCell(db, {
          name,
          dir: cell.dir,
          managed: false,
          env: cell.spec.env ?? {},
          limits: {},
          sandbox: {},
          created_at: cell.created_at_ms,
          owner_uid: null,
        });
      }
      record.run("cell", cell.id, name, tree.root, now);
      appendEvent(
        db,
        "cell.imported",
        `cell/${name}`,
        { legacy_id: cell.id, from: item.path, dir: cell.dir, merged: item.action === "merge", note: item.note },
        now,
      );
    }).immediate();
  }

  const insert = db.query(
    `INSERT INTO jobs (id, cell, argv, cwd, env, limits, sandbox_mode, backend, state, reason, exit_code, signal,
       message, pid, start_time, created_at, started_at, finished_at, enforcement)
     VALUES (?, ?, ?, ?, ?, ?, 'disabled', 'none', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  for (const p of plan.jobs) {
    const { job, outcome, token } = p;
    const dir = jobDir(stateDir, job.id);
    const files = jobFiles(dir);
    const live = outcome === null;
    const notes: string[] = p.item.note ? [p.item.note] : [];
    rmSync(dir, { recursive: true, force: true }); // left by an import that died before its commit
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      placeLog(legacyLog(tree.root, job, "stdout"), files.stdout, live, notes, "stdout");
      placeLog(legacyLog(tree.root, job, "stderr"), files.stderr, live, notes, "stderr");
      p.item.note = notes.length ? notes.join("; ") : null;
      db.transaction(() => {
        insert.run(
          job.id,
          p.cell,
          JSON.stringify(job.command.argv),
          job.command.cwd,
          JSON.stringify(job.command.env ?? {}),
          JSON.stringify(importLimits(job.command.limits)),
          outcome ? outcome.state : "running",
          outcome ? outcome.reason : null,
          outcome ? outcome.exit_code : null,
          outcome ? outcome.signal : null,
          outcome ? outcome.message : null,
          job.pid ?? null,
          token,
          job.started_at_ms,
          job.started_at_ms,
          outcome
            ? outcome.state === "lost" && job.status.type === "running"
              ? now
              : (job.finished_at_ms ?? null)
            : null,
          live ? "monitor" : null,
        );
        record.run("job", job.id, job.id, tree.root, now);
        appendEvent(
          db,
          "job.imported",
          `job/${job.id}`,
          {
            legacy_id: job.id,
            from: p.item.path,
            cell: p.cell,
            state: outcome ? outcome.state : "running",
            adopted: live,
            pid: job.pid ?? null,
            note: p.item.note,
          },
          now,
        );
      }).immediate();
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }
}
