/** Open planter's SQLite state: WAL, busy timeout, ordered migrations keyed on user_version. */
import { Database } from "bun:sqlite";
import { dirname } from "node:path";
import { PlanterError } from "../api/errors.ts";
import { cheapCheck } from "./integrity.ts";
import { storageError } from "./storage.ts";

/** One schema step; applied in its own immediate transaction. */
export interface Migration {
  version: number;
  name: string;
  up: (db: Database) => void;
}

/** Every migration, in order. Append only: never edit a released one. */
export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: "cells, jobs, events, idempotency",
    up: (db) => {
      db.run(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`);
      db.run(`CREATE TABLE cells (
        name TEXT PRIMARY KEY,
        dir TEXT NOT NULL,
        managed INTEGER NOT NULL,
        env TEXT NOT NULL,
        limits TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        created_at INTEGER NOT NULL)`);
      db.run(`CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        cell TEXT NOT NULL,
        argv TEXT NOT NULL,
        cwd TEXT NOT NULL,
        env TEXT NOT NULL,
        limits TEXT NOT NULL,
        sandbox_mode TEXT NOT NULL,
        backend TEXT NOT NULL,
        sandbox_fallback INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        reason TEXT,
        exit_code INTEGER,
        signal TEXT,
        message TEXT,
        pid INTEGER,
        start_time TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        kill_signal TEXT,
        kill_force INTEGER,
        kill_requested_at INTEGER,
        kill_reason TEXT,
        request_ref TEXT)`);
      db.run(`CREATE INDEX jobs_cell ON jobs (cell, seq)`);
      db.run(`CREATE INDEX jobs_state ON jobs (state, seq)`);
      db.run(`CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        data TEXT NOT NULL)`);
      db.run(`CREATE TABLE idempotency (
        scope TEXT NOT NULL,
        ref TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        result_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (scope, ref))`);
      db.run(`INSERT INTO meta (key, value) VALUES ('stream_id', ?)`, [randomStreamId()]);
    },
  },
  {
    version: 2,
    name: "effective sandbox policy of each job",
    up: (db) => {
      db.run("ALTER TABLE jobs ADD COLUMN sandbox_policy TEXT");
    },
  },
  {
    version: 3,
    name: "limit enforcement of each job: mode, cgroup, the limit hit, log truncation",
    up: (db) => {
      db.run("ALTER TABLE jobs ADD COLUMN enforcement TEXT");
      db.run("ALTER TABLE jobs ADD COLUMN cgroup TEXT");
      db.run("ALTER TABLE jobs ADD COLUMN limit_hit TEXT");
      db.run("ALTER TABLE jobs ADD COLUMN log_truncated INTEGER NOT NULL DEFAULT 0");
    },
  },
  {
    version: 4,
    name: "what `migrate state` imported from the legacy prototype (so a re-run imports nothing)",
    up: (db) => {
      db.run(`CREATE TABLE legacy_imports (
        kind TEXT NOT NULL,
        legacy_id TEXT NOT NULL,
        target TEXT NOT NULL,
        root TEXT NOT NULL,
        imported_at INTEGER NOT NULL,
        PRIMARY KEY (kind, legacy_id))`);
    },
  },
  {
    version: 5,
    name: "containment: each cell's owner, who each job ran as, what the workspace review set aside",
    up: (db) => {
      db.run("ALTER TABLE cells ADD COLUMN owner_uid INTEGER");
      db.run("ALTER TABLE jobs ADD COLUMN run_as TEXT");
      db.run("ALTER TABLE jobs ADD COLUMN workspace TEXT");
    },
  },
  {
    version: 6,
    name: "an index of the jobs that still name a cgroup (start-up's sweep read every row)",
    up: (db) => {
      db.run("CREATE INDEX jobs_cgroup ON jobs (seq) WHERE cgroup IS NOT NULL");
    },
  },
  {
    version: 7,
    name: "interactive jobs: the terminal's size (null: no terminal)",
    up: (db) => {
      db.run("ALTER TABLE jobs ADD COLUMN tty TEXT");
    },
  },
  {
    version: 8,
    name: "jobs that read a stdin of their own (planter run -i): 1, else 0",
    up: (db) => {
      db.run("ALTER TABLE jobs ADD COLUMN stdin INTEGER NOT NULL DEFAULT 0");
    },
  },
  {
    version: 9,
    name: "agents (#16): each observed agent with its last reports, the changes a watch resumes from",
    up: (db) => {
      db.run(`CREATE TABLE agents (
        runtime_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        state TEXT NOT NULL,
        owner_uid INTEGER,
        job_id TEXT,
        record TEXT NOT NULL,
        gone_at INTEGER)`);
      db.run(`CREATE TABLE agent_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        runtime_id TEXT NOT NULL,
        op TEXT NOT NULL,
        owner_uid INTEGER,
        agent TEXT NOT NULL)`);
      db.run(`INSERT INTO meta (key, value) VALUES ('agents_stream_id', ?)`, [randomStreamId()]);
    },
  },
];

/** The schema version this build writes. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

function randomStreamId(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Current `PRAGMA user_version` of an open database. */
export function schemaVersion(db: Database): number {
  return (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
}

/** Apply every pending migration, each in one immediate transaction; returns the versions applied. */
export function migrate(db: Database, migrations: Migration[] = MIGRATIONS): number[] {
  const applied: number[] = [];
  const current = schemaVersion(db);
  const latest = migrations[migrations.length - 1]?.version ?? 0;
  if (current > latest) {
    throw new PlanterError("E_STATE", `state schema v${current} is newer than this planter understands (v${latest})`, {
      hint: "upgrade planter to the version that wrote this state",
    });
  }
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      m.up(db);
      db.run(`PRAGMA user_version = ${m.version}`);
    }).immediate();
    applied.push(m.version);
  }
  return applied;
}

/**
 * Open (creating if needed) the state database, check its integrity and migrate it. `check`:
 * "full" (`PRAGMA quick_check`, every page) or "cheap" (lib/state/integrity.ts: only for a
 * database planterd closed cleanly and nobody touched since; a pending migration still checks
 * fully).
 */
export function openState(path: string, opts: { readonly?: boolean; check?: "full" | "cheap" } = {}): Database {
  let db: Database;
  try {
    db = new Database(path, opts.readonly ? { readonly: true } : { create: true, readwrite: true, strict: true });
    db.run("PRAGMA busy_timeout = 5000");
    if (!opts.readonly) {
      db.run("PRAGMA journal_mode = WAL");
      db.run("PRAGMA synchronous = NORMAL");
    }
    db.run("PRAGMA foreign_keys = ON");
    if (opts.check === "cheap" && schemaVersion(db) === SCHEMA_VERSION) cheapCheck(db, path);
    else {
      const check = db.query("PRAGMA quick_check").all() as { quick_check: string }[];
      if (check.length !== 1 || check[0]?.quick_check !== "ok") {
        throw new Error(check.map((r) => r.quick_check).join("; "));
      }
    }
  } catch (e) {
    // A full or failing disk is not a damaged database: moving it aside would lose every job.
    const storage = storageError(e, dirname(path));
    if (storage) throw storage;
    throw new PlanterError("E_STATE", `state database ${path} failed its integrity check: ${(e as Error).message}`, {
      hint: `stop planterd, move ${path} aside (with its -wal and -shm files) and start again; jobs recorded in it are lost`,
      cause: e,
    });
  }
  if (!opts.readonly) {
    try {
      migrate(db);
    } catch (e) {
      db.close();
      throw storageError(e, dirname(path)) ?? e;
    }
  }
  return db;
}

/** The database's event stream id (names this database in event cursors). */
export function streamId(db: Database): string {
  const row = db.query("SELECT value FROM meta WHERE key = 'stream_id'").get() as { value: string } | null;
  if (!row) throw new PlanterError("E_STATE", "state database has no stream id");
  return row.value;
}
