/**
 * Upgrade planter's database the careful way: a consistent copy first (`VACUUM INTO`, named
 * with the schema version and a timestamp, next to the database), then the pending migrations,
 * and the copy put back if any of them fails.
 */
import { Database } from "bun:sqlite";
import { chmodSync, copyFileSync, existsSync, renameSync, rmSync } from "node:fs";
import { PlanterError } from "../api/errors.ts";
import { MIGRATIONS, type Migration, migrate, schemaVersion } from "./db.ts";

/** Open the database as planterd does (WAL, busy timeout, integrity check) but without migrating it. */
export function openUnmigrated(path: string, opts: { readonly?: boolean } = {}): Database {
  let db: Database | null = null;
  try {
    db = opts.readonly
      ? new Database(path, { readonly: true })
      : new Database(path, { create: true, readwrite: true, strict: true });
    db.run("PRAGMA busy_timeout = 5000");
    if (!opts.readonly) {
      db.run("PRAGMA journal_mode = WAL");
      db.run("PRAGMA synchronous = NORMAL");
    }
    const check = db.query("PRAGMA quick_check").all() as { quick_check: string }[];
    if (check.length !== 1 || check[0]?.quick_check !== "ok") {
      throw new Error(check.map((r) => r.quick_check).join("; "));
    }
    return db;
  } catch (e) {
    db?.close();
    throw new PlanterError("E_STATE", `state database ${path} failed its integrity check: ${(e as Error).message}`, {
      hint: `restore it from a backup next to it (planter.db.v*.bak), or move ${path} aside (with its -wal and -shm files)`,
      cause: e,
    });
  }
}

/** `planter.db.v3.20250101T120000Z.bak`: the version it holds and when it was taken. */
export function backupPath(dbPath: string, version: number, now = Date.now()): string {
  const stamp = new Date(now)
    .toISOString()
    .replace(/\.\d+Z$/, "Z")
    .replaceAll(/[-:]/g, "");
  let path = `${dbPath}.v${version}.${stamp}.bak`;
  for (let n = 2; existsSync(path); n++) path = `${dbPath}.v${version}.${stamp}-${n}.bak`;
  return path;
}

/** A consistent copy of an open database (VACUUM INTO sees one snapshot, WAL included), mode 0600. */
export function backupDatabase(db: Database, to: string): void {
  db.query("VACUUM INTO ?").run(to);
  chmodSync(to, 0o600);
}

/**
 * Put `backup` back in place of the (closed) database at `dbPath`. The WAL goes first: a stale
 * WAL beside the restored file would be replayed into it.
 */
export function restoreDatabase(backup: string, dbPath: string): void {
  const tmp = `${dbPath}.restore.tmp`;
  copyFileSync(backup, tmp);
  chmodSync(tmp, 0o600);
  rmSync(`${dbPath}-wal`, { force: true });
  rmSync(`${dbPath}-shm`, { force: true });
  renameSync(tmp, dbPath);
}

/** What an upgrade did (or, in a dry run, would do). */
export interface Upgrade {
  path: string;
  /** False when there was no database: it is created at the latest version. */
  existed: boolean;
  from: number;
  to: number;
  applied: number[];
  backup: string | null;
}

/** The versions `migrations` would apply to a database at `from`; throws for a newer database. */
export function pendingVersions(from: number, path: string, migrations: Migration[] = MIGRATIONS): number[] {
  const latest = migrations[migrations.length - 1]?.version ?? 0;
  if (from > latest) {
    throw new PlanterError(
      "E_STATE",
      `state database ${path} is at schema v${from}, newer than this planter (v${latest})`,
      {
        hint: "upgrade planter to the version that wrote this state; migrate never downgrades",
      },
    );
  }
  return migrations.filter((m) => m.version > from).map((m) => m.version);
}

/**
 * Bring the open database `db` (at `dbPath`) to the latest schema: back it up, migrate, and on
 * failure close it, restore the backup and throw. A database that did not exist before
 * (`existed` false) needs no backup; a failure removes it. Idempotent: at the latest version
 * nothing is applied and no backup is taken.
 */
export function upgradeDatabase(
  db: Database,
  dbPath: string,
  existed: boolean,
  opts: { migrations?: Migration[]; now?: number } = {},
): Upgrade {
  const migrations = opts.migrations ?? MIGRATIONS;
  const from = schemaVersion(db);
  const pending = pendingVersions(from, dbPath, migrations);
  if (!pending.length) return { path: dbPath, existed, from, to: from, applied: [], backup: null };
  const backup = existed ? backupPath(dbPath, from, opts.now) : null;
  if (backup) backupDatabase(db, backup);
  try {
    const applied = migrate(db, migrations);
    return { path: dbPath, existed, from, to: schemaVersion(db), applied, backup };
  } catch (e) {
    const reached = schemaVersion(db);
    const failed = migrations.find((m) => m.version > reached);
    db.close();
    if (backup) restoreDatabase(backup, dbPath);
    else for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) rmSync(f, { force: true });
    const what = failed ? `migration v${failed.version} (${failed.name})` : "a migration";
    throw new PlanterError(
      "E_STATE",
      `upgrading ${dbPath} from v${from} failed at ${what}: ${(e as Error).message}; ` +
        (backup ? `the database was restored from ${backup} (v${from})` : "the new database was removed"),
      {
        hint: "nothing was changed; report this with the backup file, or run an older planter on this state",
        cause: e,
        details: { from, failed: failed?.version ?? null, backup },
      },
    );
  }
}
