/** The state dir: state.integrity, state.schema, state.job-dirs, state.disk-space, state.legacy-json. */
import { accessSync, constants, existsSync, readdirSync, statfsSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { PlanterError } from "../../api/errors.ts";
import { shellLine } from "../../cli/output.ts";
import { formatBytes } from "../../cli/units.ts";
import { stateFiles } from "../../paths.ts";
import { openState, SCHEMA_VERSION, schemaVersion } from "../../state/db.ts";
import {
  countItems,
  type Existing,
  existingState,
  isLegacyTree,
  planImport,
  readLegacyTree,
} from "../../state/legacy.ts";
import { reserveBytes } from "../../state/storage.ts";
import { type Check, fail, type Linked, ok, type Result, skip, warn } from "../check.ts";
import type { DoctorContext } from "../context.ts";

/** The database as doctor found it, opened read-only. */
export type DbProbe =
  | { kind: "missing"; path: string }
  | { kind: "unreadable"; path: string; message: string }
  | { kind: "broken"; path: string; message: string }
  | { kind: "ok"; path: string; version: number; existing: Existing };

/** Open the database read-only and run `PRAGMA quick_check` (through openState), once per run. */
export function dbProbe(ctx: DoctorContext & Linked): Promise<DbProbe> {
  return ctx.once("db", async (): Promise<DbProbe> => {
    const path = stateFiles(ctx.paths.stateDir).db;
    try {
      // EACCES (a state dir this user cannot enter) is unreadable, not missing.
      statSync(path);
      accessSync(path, constants.R_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return { kind: "missing", path };
      return { kind: "unreadable", path, message: code ?? String(e) };
    }
    let db: ReturnType<typeof openState> | null = null;
    try {
      db = openState(path, { readonly: true });
      return {
        kind: "ok",
        path,
        version: schemaVersion(db),
        // What `migrate state` would compare a legacy tree with (cells, jobs, legacy_imports).
        existing: existingState(db),
      };
    } catch (e) {
      const message = e instanceof PlanterError ? e.message : `${path}: ${(e as Error).message}`;
      return { kind: "broken", path, message };
    } finally {
      db?.close();
    }
  });
}

/** state.integrity from the probe; `stop`/`start` are this host's planterd commands. */
export function integrityResult(
  p: DbProbe,
  stateDir: string,
  c: { stop: string; start: string; sudo: string },
): Result {
  if (p.kind === "missing") return skip(`no database yet at ${p.path}: planterd creates it at its first start`);
  if (p.kind === "unreadable") {
    return skip(
      `cannot read ${p.path} as this user (${p.message})`,
      "the state belongs to planterd's user; run doctor with sudo to check it",
    );
  }
  if (p.kind === "broken") {
    const aside = shellLine([join(stateDir, "broken-")]);
    return fail(
      p.message,
      "the database is damaged (a full disk, a crash or a copy taken mid-write) and planterd refuses to start on it; move it aside and start again — the jobs recorded in it are lost",
      `${c.stop}; b=${aside}$(date +%Y%m%d%H%M%S) && ${c.sudo}mkdir -p "$b" && ${c.sudo}mv ${shellLine([p.path])}* "$b"/ && ${c.start}`,
    );
  }
  return ok(`${p.path}: quick_check ok`);
}

/** state.schema: the database's user_version against the schema this build writes. */
export function schemaResult(version: number, current: number, migrate: string): Result {
  if (version === current) return ok(`schema v${version}, the version this build writes`);
  if (version < current) {
    return warn(
      `schema v${version}, this build writes v${current}`,
      "an older planterd runs on it; `migrate state` upgrades it (backup first) with planterd stopped, and this planterd starts on it",
      migrate,
    );
  }
  return fail(
    `schema v${version} is newer than this planter understands (v${current}): a newer planter wrote it`,
    "this planterd refuses to open it; run the planter release that wrote it",
    "./install  # from the newer release's tarball",
  );
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;

/** What the jobs dir holds against the database: job dirs, and those the database does not know. */
export interface JobDirs {
  dirs: number;
  unknown: string[];
  /** Jobs the database records (0 for an empty or missing database). */
  known: number;
  /** Backups next to the database (planter.db.v*.bak), newest last. */
  backups: string[];
  /** The database file does not exist. */
  missing?: boolean;
}

/**
 * state.job-dirs: job dirs the database does not know. All of them while it records no job
 * means the database was emptied or replaced (a 0-byte planter.db) and planterd started afresh.
 */
export function jobDirsResult(
  found: JobDirs,
  files: { db: string; jobs: string },
  c: { stop: string; start: string; sudo: string },
): Result {
  if (!found.unknown.length) return ok(`${plural(found.dirs, "job dir")}, each recorded in ${files.db}`);
  const some = found.unknown.slice(0, 3).join(", ") + (found.unknown.length > 3 ? ", …" : "");
  const aside = `${c.sudo}mkdir -p ${shellLine([`${files.jobs}.unknown`])} && ${c.sudo}mv ${found.unknown
    .slice(0, 20)
    .map((id) => shellLine([join(files.jobs, id)]))
    .join(" ")} ${shellLine([`${files.jobs}.unknown`])}/`;
  if (found.known === 0) {
    const backup = found.backups[found.backups.length - 1];
    return fail(
      `${files.db} ${found.missing ? "is missing" : "records no job"}, but ${files.jobs} holds ${plural(found.unknown.length, "job dir")} (${some}): the database was emptied or replaced and planterd started with empty state`,
      backup
        ? `the jobs' logs are still there; restore the newest backup (${backup}) with planterd stopped — jobs and cells recorded after it are lost`
        : "the jobs' logs are still there, their records are not (no backup next to the database); move the dirs aside to keep the logs",
      backup
        ? `${c.stop}; ${c.sudo}cp ${shellLine([backup])} ${shellLine([files.db])} && ${c.sudo}rm -f ${shellLine([`${files.db}-wal`, `${files.db}-shm`])} && ${c.start}`
        : aside,
    );
  }
  return warn(
    `${plural(found.unknown.length, "job dir")} in ${files.jobs} that ${files.db} does not know (${some})`,
    "left by a job removed while planterd stopped, or by an older database; their logs are not served by planterd",
    aside,
  );
}

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

const size = (n: number) => (n >= GiB ? `${(n / GiB).toFixed(1)} GiB` : `${Math.round(n / MiB)} MiB`);

/**
 * state.disk-space: fail under the log reserve (`reserve` bytes: planterd stops jobs that print)
 * or under 100 MiB free, warn under 1 GiB or 5 %.
 */
export function diskResult(avail: number, total: number, dir: string, jobsDir: string, reserve = 0): Result {
  const pct = total > 0 ? (avail / total) * 100 : 100;
  const what = `${size(avail)} free of ${size(total)} (${pct.toFixed(pct < 10 ? 1 : 0)} %) on ${dir}`;
  const fix = `du -sh ${shellLine([jobsDir])}/* 2>/dev/null | sort -h | tail -20`;
  const hint = "jobs' logs take the space: find the largest and remove finished jobs with `planter job rm ID`";
  if (avail < reserve) {
    return fail(
      `${what}: below planter's log reserve of ${formatBytes(reserve)} ([logs] min_free_bytes): jobs whose output grows are stopped (disk_full)`,
      hint,
      fix,
    );
  }
  if (avail < 100 * MiB) return fail(`${what}: planterd cannot write state or logs much longer`, hint, fix);
  if (avail < GiB || pct < 5) return warn(`${what}: running low`, hint, fix);
  return ok(what);
}

/** The nearest existing directory at or above `dir` (statfs needs one). */
function existing(dir: string): string {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/** The legacy prototype's state root: PLANTER_STATE_DIR, else ~/.planter/state (as `migrate state`). */
export const legacyRoot = (env: Record<string, string | undefined>) =>
  env.PLANTER_STATE_DIR ? resolve(env.PLANTER_STATE_DIR) : join(env.HOME || homedir(), ".planter", "state");

/** A legacy tree as `migrate state` would see it: what it holds, and what an import would still bring in. */
export interface LegacySummary {
  cells: number;
  jobs: number;
  malformed: number;
  toImport: { cells: number; jobs: number };
}

/** state.legacy-json: warn while `migrate state` would import something, or would skip malformed files. */
export function legacyResult(
  root: string,
  found: LegacySummary | null,
  fix: { migrate: string; dryRun: string },
): Result {
  if (!found) return ok(`no legacy prototype state at ${root}`);
  const { toImport: t, malformed } = found;
  if (!found.cells && !found.jobs && !malformed) return ok(`${root} holds no legacy jobs or cells`);
  const bad = malformed ? plural(malformed, "malformed file") : "";
  if (t.cells || t.jobs) {
    const what = [t.jobs ? plural(t.jobs, "job") : "", t.cells ? plural(t.cells, "cell") : ""].filter(Boolean);
    return warn(
      `legacy prototype state at ${root} is not imported: ${what.join(" and ")} to import${bad ? `; ${bad}` : ""}`,
      "planter's first prototype kept JSON files there; `migrate state` imports them into planter.db once, with planterd stopped (--dry-run shows what it would do)",
      fix.migrate,
    );
  }
  if (malformed) {
    return warn(
      `legacy prototype state at ${root}: imported, but ${bad} could not be`,
      "fix or remove them, then run `migrate state` again; --dry-run lists them by path",
      fix.dryRun,
    );
  }
  return ok(`${root}: imported (${plural(found.jobs, "job")}, ${plural(found.cells, "cell")})`);
}

const integrity: Check<DoctorContext> = {
  id: "state.integrity",
  description: "the SQLite database opens read-only and passes PRAGMA quick_check",
  async run(ctx) {
    return integrityResult(await dbProbe(ctx), ctx.paths.stateDir, ctx.commands);
  },
};

const schema: Check<DoctorContext> = {
  id: "state.schema",
  description: "the database's schema version is the one this build writes",
  async run(ctx) {
    const p = await dbProbe(ctx);
    if (p.kind !== "ok")
      return skip(p.kind === "missing" ? "no database yet" : "the database cannot be read (see state.integrity)");
    const c = ctx.commands;
    return schemaResult(p.version, SCHEMA_VERSION, `${c.stop}; ${c.planter} migrate state && ${c.start}`);
  },
};

const jobDirs: Check<DoctorContext> = {
  id: "state.job-dirs",
  description: "every job dir in the state dir is recorded in the database (an emptied database is found here)",
  async run(ctx) {
    const files = stateFiles(ctx.paths.stateDir);
    let names: string[];
    try {
      names = readdirSync(files.jobs, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name)
        .sort();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return skip(`no jobs dir yet at ${files.jobs}`);
      return skip(`cannot read ${files.jobs} as this user (${code})`, "run doctor with sudo to check it");
    }
    const p = await dbProbe(ctx);
    if (p.kind === "unreadable" || p.kind === "broken")
      return skip("the database cannot be read (see state.integrity)");
    const known = p.kind === "ok" ? p.existing.jobIds : new Set<string>();
    const base = files.db.slice(files.db.lastIndexOf("/") + 1);
    let backups: string[] = [];
    try {
      backups = readdirSync(dirname(files.db))
        .filter((n) => n.startsWith(`${base}.v`) && n.endsWith(".bak"))
        .map((n) => join(dirname(files.db), n))
        .sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs);
    } catch {
      backups = [];
    }
    const unknown = names.filter((n) => !known.has(n));
    const found = { dirs: names.length, unknown, known: known.size, backups, missing: p.kind === "missing" };
    return jobDirsResult(found, files, ctx.commands);
  },
};

const disk: Check<DoctorContext> = {
  id: "state.disk-space",
  description:
    "free space where the state dir is: warn under 1 GiB or 5 %, fail under 100 MiB or the log reserve ([logs] min_free_bytes)",
  async run(ctx) {
    const dir = existing(ctx.paths.stateDir);
    let s: ReturnType<typeof statfsSync>;
    try {
      s = statfsSync(dir);
    } catch (e) {
      return skip(`cannot measure free space on ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const total = s.blocks * s.bsize;
    const reserve = reserveBytes(ctx.config.ok ? ctx.config.config.logs.min_free_bytes : undefined, total);
    return diskResult(s.bavail * s.bsize, total, dir, stateFiles(ctx.paths.stateDir).jobs, reserve);
  },
};

const legacy: Check<DoctorContext> = {
  id: "state.legacy-json",
  description: "no state of planter's JSON prototype (~/.planter/state or PLANTER_STATE_DIR) waits to be imported",
  async run(ctx) {
    const root = legacyRoot(ctx.env);
    const c = ctx.commands;
    const fix = {
      migrate: `${c.stop}; ${c.planter} migrate state && ${c.start}`,
      dryRun: `${c.planter} migrate state --dry-run`,
    };
    if (!isLegacyTree(root)) return legacyResult(root, null, fix);
    const p = await dbProbe(ctx);
    if (p.kind === "unreadable" || p.kind === "broken")
      return skip(`legacy state at ${root}, but planter.db cannot be read to compare (see state.integrity)`);
    const tree = readLegacyTree(root);
    const counts = countItems(planImport(tree, p.kind === "ok" ? p.existing : existingState(null)).items);
    return legacyResult(
      root,
      {
        cells: tree.cells.length,
        jobs: tree.jobs.length,
        malformed: tree.malformed.length,
        toImport: { cells: counts.cells.imported + counts.cells.merged, jobs: counts.jobs.imported },
      },
      fix,
    );
  },
};

export const stateChecks = [integrity, schema, jobDirs, disk, legacy];
