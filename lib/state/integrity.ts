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
 * `quick_check` in a process of its own once it serves. Any other start — after a crash, a kill, a
 * power loss, a copy or restore or hand edit of the file, an upgrade that migrates — checks fully
 * before serving, as before. A record is written only after a run whose full check passed.
 */
import type { Database } from "bun:sqlite";
import { existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

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
const HISTORY = new Set(["jobs", "events", "idempotency", "agent_changes"]);

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

/**
 * What the full check found: the database is sound, damaged (SQLite's findings), or the check
 * itself could not run (`error`: that says nothing about the database).
 */
export type FullCheck = { status: "ok" | "damaged" | "error"; message: string | null; ms: number };

// The checker's source: bun:sqlite only, run by this very executable as Bun (`BUN_BE_BUN=1` makes
// a compiled planter a plain Bun; from a checkout it is Bun already). A process, not a Worker: a
// Worker's memory and threads stayed in planterd after it ended (+8 MB RSS, +3 threads, for good).
const CHECKER = `
import { Database } from "bun:sqlite";
const started = performance.now();
let out;
try {
  const db = new Database(process.argv.at(-1), { readonly: true });
  try {
    db.run("PRAGMA busy_timeout = 5000");
    const rows = db.query("PRAGMA quick_check").all().map((r) => r.quick_check);
    out = rows.length === 1 && rows[0] === "ok" ? { status: "ok", message: null } : { status: "damaged", message: rows.join("; ") };
  } finally {
    db.close();
  }
} catch (e) {
  const damaged = e && (e.code === "SQLITE_CORRUPT" || e.code === "SQLITE_NOTADB");
  out = { status: damaged ? "damaged" : "error", message: String((e && e.message) || e) };
}
process.stdout.write(JSON.stringify({ ...out, ms: performance.now() - started }));
`;

/**
 * `PRAGMA quick_check` of the whole database in a process of its own, through a read-only
 * connection (WAL: it reads one consistent snapshot while planterd goes on writing), started in
 * the state dir with a minimal environment (no bunfig or preload of anyone else's reaches it).
 * `stop()` ends it early (planterd's shutdown); the promise then never settles.
 */
export function backgroundCheck(dbPath: string): { result: Promise<FullCheck>; stop: () => void } {
  let stopped = false;
  let proc: ReturnType<typeof Bun.spawn> | null = null;
  const result = new Promise<FullCheck>((resolve) => {
    try {
      proc = Bun.spawn([process.execPath, "-e", CHECKER, dbPath], {
        cwd: dirname(dbPath),
        env: { PATH: "/usr/bin:/bin", BUN_BE_BUN: "1" },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
    } catch (e) {
      resolve({ status: "error", message: `the check could not start: ${(e as Error).message}`, ms: 0 });
      return;
    }
    const p = proc;
    void Promise.all([
      p.exited,
      new Response(p.stdout as ReadableStream).text(),
      new Response(p.stderr as ReadableStream).text(),
    ]).then(([code, out, err]) => {
      if (stopped) return;
      try {
        const r = JSON.parse(out) as FullCheck;
        if (r.status === "ok" || r.status === "damaged" || r.status === "error") return resolve(r);
      } catch {
        // no answer: said below
      }
      resolve({ status: "error", message: `the check exited ${code}: ${err.trim().slice(-500)}`, ms: 0 });
    });
  });
  return {
    result,
    stop: () => {
      stopped = true;
      (proc as ReturnType<typeof Bun.spawn> | null)?.kill("SIGKILL");
    },
  };
}
