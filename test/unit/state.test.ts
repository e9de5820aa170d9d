import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlanterError } from "../../lib/api/errors.ts";
import {
  MIGRATIONS,
  type Migration,
  migrate,
  openState,
  SCHEMA_VERSION,
  schemaVersion,
  streamId,
} from "../../lib/state/db.ts";
import { appendEvent, pruneEvents, readEvents, resolveCursor } from "../../lib/state/events.ts";

const tmp = () => mkdtempSync("/tmp/pt-unit-");

describe("migrations", () => {
  test("a fresh database is migrated to the latest version, in WAL mode", () => {
    const dir = tmp();
    const db = openState(join(dir, "s.db"));
    expect(schemaVersion(db)).toBe(SCHEMA_VERSION);
    expect((db.query("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode).toBe("wal");
    const tables = (
      db.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]
    ).map((r) => r.name);
    expect(tables).toEqual(expect.arrayContaining(["cells", "events", "idempotency", "jobs", "meta"]));
    expect(streamId(db)).toMatch(/^[0-9a-f]{12}$/);
    db.close();
    rmSync(dir, { recursive: true });
  });

  test("migrating again applies nothing and keeps the stream id", () => {
    const dir = tmp();
    const db = openState(join(dir, "s.db"));
    const id = streamId(db);
    expect(migrate(db)).toEqual([]);
    db.close();
    const again = openState(join(dir, "s.db"));
    expect(streamId(again)).toBe(id);
    again.close();
    rmSync(dir, { recursive: true });
  });

  test("a failing migration rolls back whole and leaves the version", () => {
    const db = new Database(":memory:");
    migrate(db);
    const bad: Migration = {
      version: SCHEMA_VERSION + 1,
      name: "broken",
      up: (d) => {
        d.run("CREATE TABLE half (x)");
        d.run("INSERT INTO nowhere VALUES (1)");
      },
    };
    expect(() => migrate(db, [...MIGRATIONS, bad])).toThrow();
    expect(schemaVersion(db)).toBe(SCHEMA_VERSION);
    expect(db.query("SELECT name FROM sqlite_master WHERE name = 'half'").get()).toBeNull();
  });

  test("a database newer than this build is refused with a hint", () => {
    const db = new Database(":memory:");
    db.run(`PRAGMA user_version = ${SCHEMA_VERSION + 5}`);
    let err: PlanterError | null = null;
    try {
      migrate(db);
    } catch (e) {
      err = e as PlanterError;
    }
    expect(err?.code).toBe("E_STATE");
    expect(err?.hint).toContain("upgrade planter");
  });

  test("a file that is not a database fails the integrity check with a hint", () => {
    const dir = tmp();
    writeFileSync(join(dir, "s.db"), "garbage ".repeat(1000));
    expect(() => openState(join(dir, "s.db"))).toThrow(/integrity check/);
    rmSync(dir, { recursive: true });
  });
});

describe("event cursors", () => {
  const setup = () => {
    const db = new Database(":memory:");
    migrate(db);
    const s = streamId(db);
    for (let i = 0; i < 10; i++) appendEvent(db, "k", `s/${i}`, { i });
    return { db, s };
  };

  test("no cursor reads from the start; a cursor reads after itself", () => {
    const { db, s } = setup();
    expect(readEvents(db, s, resolveCursor(db, s, undefined), 100)).toHaveLength(10);
    const after3 = readEvents(db, s, resolveCursor(db, s, `${s}:3`), 100);
    expect(after3.map((e) => e.cursor)).toEqual([4, 5, 6, 7, 8, 9, 10].map((n) => `${s}:${n}`));
    expect(after3[0]?.data).toEqual({ i: 3 });
  });

  test("another stream, garbage, or a cursor ahead are invalid", () => {
    const { db, s } = setup();
    for (const c of ["ffffffffffff:1", "nonsense", `${s}:99`, `${s}:-1`]) {
      let code = "";
      try {
        resolveCursor(db, s, c);
      } catch (e) {
        code = (e as PlanterError).code;
      }
      expect(code).toBe("E_CURSOR_INVALID");
    }
  });

  test("a pruned cursor has expired and names the oldest valid one", () => {
    const { db, s } = setup();
    pruneEvents(db, 4); // keeps seq 7..10
    let err: PlanterError | null = null;
    try {
      resolveCursor(db, s, `${s}:2`);
    } catch (e) {
      err = e as PlanterError;
    }
    expect(err?.code).toBe("E_CURSOR_EXPIRED");
    expect(err?.details).toEqual({ oldest_cursor: `${s}:6` });
    expect(readEvents(db, s, resolveCursor(db, s, `${s}:6`), 100)).toHaveLength(4);
  });
});
