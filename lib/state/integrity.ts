/**
 * How planterd knows its database is sound without reading all of it before it serves.
 *
 * `PRAGMA quick_check` reads every page: ~125 ms at 100k jobs, on every start. A database planterd
 * itself closed cleanly, and that nobody has touched since, was sound when it closed (planterd
 * checked it fully during that run); what could have damaged it since is a disk that rots under
 * an unchanged file. So: at a clean shutdown planterd records the database file's identity
 * (`planter.db.closed`: device, inode, size, mtime and ctime in ns — no process can set a ctime
 * back); the next start takes that record (removing it first, so a crash in this run leaves none)
 * and, when the file is exactly as recorded with no write-ahead log, checks cheaply (the file's
 * length against its page count, and `quick_check` of the small tables) and runs the full
 * `quick_check` on a worker thread once it serves. Any other start — after a crash, a kill, a
 * power loss, a copy or restore or hand edit of the file, an upgrade that migrates — checks fully
 * before serving, as before. A record is written only after a run whose full check passed.
 */
import type { Database } from "bun:sqlite";
import { existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";

/** What the record holds: the database file as planterd closed it. */
interface Closed {
  version: 1;
  dev: string;
  ino: string;
  size: string;
  mtime_ns: string;
  ctime_ns: string;
}

/** The record of a clean shutdown beside the database. */
export const closedRecord = (dbPath: string) => `${dbPath}.closed`;

function identity(dbPath: string): Closed | null {
  try {
    const st = statSync(dbPath, { bigint: true });
    return {
      version: 1,
      dev: String(st.dev),
      ino: String(st.ino),
      size: String(st.size),
      mtime_ns: String(st.mtimeNs),
      ctime_ns: String(st.ctimeNs),
    };
  } catch {
    return null;
  }
}

/** A write-ahead log with frames in it (its content is part of the database). */
function walInUse(dbPath: string): boolean {
  try {
    return statSync(`${dbPath}-wal`).size > 0;
  } catch {
    return false;
  }
}

/**
 * After the database is closed at a clean shutdown whose run checked it fully: record the file
 * as it is now. A failure to write it only costs the next start its full check.
 */
export function recordCleanClose(dbPath: string): void {
  const id = identity(dbPath);
  if (!id || walInUse(dbPath)) return;
  const tmp = `${closedRecord(dbPath)}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, `${JSON.stringify(id)}\n`, { mode: 0o600 });
    renameSync(tmp, closedRecord(dbPath));
  } catch {
    try {
      unlinkSync(tmp);
    } catch {
      // never written
    }
  }
}

/**
 * Take the record of the last clean shutdown (it is removed: this run must earn its own) and
 * say whether the database is still exactly the file it describes. False when there is no
 * record, it cannot be removed, or anything about the file differs.
 */
export function takeCleanClose(dbPath: string): boolean {
  const file = closedRecord(dbPath);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return false;
  }
  try {
    unlinkSync(file);
  } catch {
    return false; // a record that stays would vouch for a later, unclean run
  }
  let was: Partial<Closed>;
  try {
    was = JSON.parse(text) as Partial<Closed>;
  } catch {
    return false;
  }
  const now = identity(dbPath);
  if (!now || was.version !== 1 || walInUse(dbPath) || existsSync(`${dbPath}-journal`)) return false;
  return (
    was.dev === now.dev &&
    was.ino === now.ino &&
    was.size === now.size &&
    was.mtime_ns === now.mtime_ns &&
    was.ctime_ns === now.ctime_ns
  );
}

/** Tables that grow with the history: checked by the full check only. */
const HISTORY = new Set(["jobs", "events", "idempotency"]);

/**
 * The check of a database that closed cleanly and is unchanged since: its length must be its
 * page count (a truncated or padded copy fails), and every small table with its indexes must
 * pass `quick_check` (the schema, meta, cells). Throws with SQLite's findings.
 */
export function cheapCheck(db: Database, dbPath: string): void {
  const pages = (db.query("PRAGMA page_count").get() as { page_count: number }).page_count;
  const size = (db.query("PRAGMA page_size").get() as { page_size: number }).page_size;
  const bytes = statSync(dbPath).size;
  if (!walInUse(dbPath) && pages * size !== bytes) {
    throw new Error(`the file is ${bytes} bytes but its header says ${pages} pages of ${size} bytes`);
  }
  const tables = db.query("SELECT name FROM sqlite_schema WHERE type = 'table'").all() as { name: string }[];
  for (const { name } of tables) {
    if (HISTORY.has(name) || name.startsWith("sqlite_")) continue;
    const rows = db.query(`PRAGMA quick_check("${name.replaceAll('"', '""')}")`).all() as { quick_check: string }[];
    if (rows.length !== 1 || rows[0]?.quick_check !== "ok") throw new Error(rows.map((r) => r.quick_check).join("; "));
  }
}

/** What the full check found: ok, or SQLite's findings (or why it could not run). */
export type FullCheck = { ok: true; ms: number } | { ok: false; message: string; ms: number };

// The worker's own source: bun:sqlite only, so that it runs the same from a source checkout and
// from the compiled binary (no module of planter's to resolve).
const WORKER = `
import { Database } from "bun:sqlite";
self.onmessage = (e) => {
  const started = performance.now();
  let out;
  try {
    const db = new Database(e.data, { readonly: true });
    try {
      db.run("PRAGMA busy_timeout = 5000");
      const rows = db.query("PRAGMA quick_check").all().map((r) => r.quick_check);
      out = rows.length === 1 && rows[0] === "ok" ? { ok: true } : { ok: false, message: rows.join("; ") };
    } finally {
      db.close();
    }
  } catch (err) {
    out = { ok: false, message: String((err && err.message) || err) };
  }
  postMessage({ ...out, ms: performance.now() - started });
};
`;

/**
 * `PRAGMA quick_check` of the whole database on a worker thread, through a read-only connection
 * of its own (WAL: it reads one consistent snapshot while planterd goes on writing). `stop()`
 * ends it early (planterd's shutdown); the promise then never settles.
 */
export function backgroundCheck(dbPath: string): { result: Promise<FullCheck>; stop: () => void } {
  const url = URL.createObjectURL(new Blob([WORKER], { type: "application/javascript" }));
  const worker = new Worker(url);
  const result = new Promise<FullCheck>((resolve) => {
    worker.onmessage = (e: MessageEvent<FullCheck>) => {
      resolve(e.data);
      worker.terminate();
      URL.revokeObjectURL(url);
    };
    worker.onerror = (e: ErrorEvent) => {
      resolve({ ok: false, message: `the check could not run: ${e.message}`, ms: 0 });
      worker.terminate();
      URL.revokeObjectURL(url);
    };
  });
  // A finished check must not keep planterd's event loop alive, nor a running one its shutdown.
  worker.unref();
  worker.postMessage(dbPath);
  return {
    result,
    stop: () => {
      worker.terminate();
      URL.revokeObjectURL(url);
    },
  };
}
