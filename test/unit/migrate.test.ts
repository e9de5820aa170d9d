import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PlanterError } from "../../lib/api/errors.ts";
import { MIGRATIONS, type Migration, migrate, SCHEMA_VERSION, schemaVersion } from "../../lib/state/db.ts";
import {
  argvMatches,
  cellNameFor,
  type Existing,
  exitedOutcome,
  importLimits,
  type LegacyJobFile,
  liveness,
  type ProcessFacts,
  planImport,
  readLegacyTree,
} from "../../lib/state/legacy.ts";
import { lockStateDir } from "../../lib/state/lock.ts";
import { migrateState } from "../../lib/state/migrate.ts";

const FIXTURE = join(import.meta.dir, "..", "fixtures", "legacy");
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync("/tmp/pt-unit-mig-");
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const broken: Migration = {
  version: SCHEMA_VERSION + 1,
  name: "broken on purpose",
  up: (db) => {
    db.run("CREATE TABLE half_done (x)");
    db.run("INSERT INTO nowhere VALUES (1)");
  },
};

function v1Database(stateDir: string): string {
  mkdirSync(stateDir, { recursive: true });
  const path = join(stateDir, "planter.db");
  const db = new Database(path, { create: true });
  migrate(db, MIGRATIONS.slice(0, 1));
  db.run(
    `INSERT INTO jobs (id, cell, argv, cwd, env, limits, sandbox_mode, backend, state, created_at)
     VALUES ('j-keep', 'default', '["true"]', '/tmp', '{}', '{}', 'disabled', 'none', 'exited', 1)`,
  );
  db.close();
  return path;
}

describe("database upgrade rollback", () => {
  test("a failing migration restores the backup: the database is back at its old version, whole", () => {
    const home = tmp();
    const stateDir = join(home, "state");
    const path = v1Database(stateDir);
    let err: PlanterError | null = null;
    try {
      migrateState({ stateDir, legacyRoot: join(home, "none"), migrations: [...MIGRATIONS, broken] });
    } catch (e) {
      err = e as PlanterError;
    }
    expect(err).toBeInstanceOf(PlanterError);
    expect(err?.code).toBe("E_STATE");
    expect(err?.message).toContain(`failed at migration v${broken.version} (broken on purpose)`);
    expect(err?.message).toContain("the database was restored from");
    // Migrations 2..latest had committed before the broken one: only the backup brings v1 back.
    const db = new Database(path, { readonly: true });
    expect(schemaVersion(db)).toBe(1);
    expect(db.query("SELECT id FROM jobs").all()).toEqual([{ id: "j-keep" }]);
    expect(db.query("SELECT name FROM sqlite_master WHERE name IN ('half_done', 'legacy_imports')").all()).toEqual([]);
    db.close();
    const files = readdirSync(stateDir);
    expect(files.filter((f) => /^planter\.db\.v1\..+\.bak$/.test(f))).toHaveLength(1);
    expect(files).not.toContain("planterd.pid");
    // And the real migrations still apply afterwards.
    const report = migrateState({ stateDir, legacyRoot: join(home, "none") });
    expect(report.database).toMatchObject({ from: 1, to: SCHEMA_VERSION });
  });

  test("a database created by the run is removed when its migration fails, and nothing is imported", () => {
    const home = tmp();
    const stateDir = join(home, "state");
    const root = join(home, "legacy");
    cpSync(FIXTURE, root, { recursive: true });
    expect(() => migrateState({ stateDir, legacyRoot: root, migrations: [...MIGRATIONS, broken] })).toThrow(
      /the new database was removed/,
    );
    expect(readdirSync(stateDir).filter((f) => f.startsWith("planter.db"))).toEqual([]);
    expect(existsSync(join(stateDir, "jobs", "job-1"))).toBe(false);
  });
});

describe("legacy jobs recorded as running", () => {
  const job = (argv: string[], started: number, pid: number | null = 4321) =>
    ({ pid, started_at_ms: started, command: { argv, cwd: "/", env: {} } }) as Pick<
      LegacyJobFile,
      "pid" | "started_at_ms" | "command"
    >;
  const facts =
    (f: ProcessFacts | null) =>
    (_pid: number): ProcessFacts | null =>
      f;
  const t0 = 1_700_000_000_000;

  test("adopted only when alive, started with the job, and running its argv", () => {
    const same = facts({ startMs: t0 + 40, argv: ["sleep", "60"], token: "777" });
    expect(liveness(job(["sleep", "60"], t0), 3000, same)).toEqual({ alive: true, token: "777" });
    expect(liveness(job(["sleep", "60"], t0), 3000, facts(null))).toMatchObject({
      alive: false,
      why: expect.stringMatching(/is gone/),
    });
    expect(liveness(job(["sleep", "60"], t0, null), 3000, same)).toMatchObject({
      alive: false,
      why: expect.stringMatching(/without a pid/),
    });
    const later = facts({ startMs: t0 + 60_000, argv: ["sleep", "60"], token: "9" });
    expect(liveness(job(["sleep", "60"], t0), 3000, later)).toMatchObject({
      alive: false,
      why: expect.stringMatching(/another process/),
    });
    const other = facts({ startMs: t0, argv: ["vim"], token: "9" });
    expect(liveness(job(["sleep", "60"], t0), 3000, other)).toMatchObject({
      alive: false,
      why: expect.stringMatching(/cannot prove/),
    });
    const unreadable = facts({ startMs: t0, argv: null, token: "9" });
    expect(liveness(job(["sleep", "60"], t0), 3000, unreadable)).toMatchObject({ alive: false });
  });

  test("argv matches through a resolved program path and a #! interpreter, and nothing looser", () => {
    expect(argvMatches(["sleep", "60"], ["sleep", "60"])).toBe(true);
    expect(argvMatches(["/usr/bin/cargo", "test"], ["cargo", "test"])).toBe(true);
    expect(argvMatches(["/bin/sh", "./build.sh", "-v"], ["./build.sh", "-v"])).toBe(true);
    expect(argvMatches(["sleep", "61"], ["sleep", "60"])).toBe(false);
    expect(argvMatches(["sleep"], ["sleep", "60"])).toBe(false);
    expect(argvMatches(["/bin/sh", "-c", "exec make"], ["make"])).toBe(false);
    expect(argvMatches([], ["true"])).toBe(false);
  });
});

describe("legacy outcomes", () => {
  test("exit codes and termination reasons map onto planter's states and reasons", () => {
    const o = (code: number | null, reason?: string) => {
      const r = exitedOutcome(code, reason);
      return [r.state, r.reason, r.signal];
    };
    expect(o(0)).toEqual(["exited", "exited", null]);
    expect(o(2)).toEqual(["failed", "exited", null]);
    expect(o(143, "killed")).toEqual(["killed", "terminated_by_user", "TERM"]);
    expect(o(137, "Forced-Kill")).toEqual(["killed", "forced_kill", "KILL"]);
    expect(o(137, "timed out")).toEqual(["killed", "timeout", "KILL"]);
    expect(o(137, "oom")).toEqual(["killed", "memory_limit", "KILL"]);
    expect(o(null, "spawn_failed")).toEqual(["failed", "spawn_error", null]);
    expect(o(null)).toEqual(["failed", "exited", null]);
    expect(exitedOutcome(1, "cosmic rays").message).toBe('legacy termination_reason "cosmic rays"');
  });

  test("only limits planter understands are kept", () => {
    expect(importLimits({ timeout_ms: 5000, cpu: 2, max_rss_bytes: -1, max_log_bytes: 1024 })).toEqual({
      timeout_ms: 5000,
      max_log_bytes: 1024,
    });
    expect(importLimits(null)).toEqual({});
  });
});

describe("legacy cells", () => {
  test("names that planter refuses become valid ones", () => {
    expect(cellNameFor("web", "cell-1")).toBe("web");
    expect(cellNameFor("My Project!", "cell-2")).toBe("my-project");
    expect(cellNameFor("..", "cell-3")).toBe("cell-3");
    expect(cellNameFor("日本", "cell-4")).toBe("cell-4");
    expect(cellNameFor("x".repeat(80), "cell-5")).toBe("x".repeat(63));
  });

  test("an existing cell with the same dir is joined; with another dir the legacy one is renamed", () => {
    const tree = readLegacyTree(FIXTURE);
    const ex: Existing = {
      cells: new Map([
        ["web", "/tmp"],
        ["my-project", "/home/someone/else"],
        ["my-project-legacy", "/x"],
      ]),
      jobIds: new Set(["job-2"]),
      imported: new Map([["job:job-1", { target: "job-1", root: "/elsewhere" }]]),
    };
    const plan = planImport(tree, ex, { facts: () => null });
    const item = (id: string) => plan.items.find((i) => i.legacy_id === id);
    expect(item("cell-1")).toMatchObject({ action: "merge", target: "web" });
    expect(item("cell-2")).toMatchObject({ action: "import", target: "my-project-legacy-2" });
    expect(item("cell-2")?.note).toContain("already exists with another dir (/home/someone/else)");
    expect(item("job-1")).toMatchObject({ action: "skip", skip: "already_imported" });
    expect(item("job-1")?.note).toContain("from /elsewhere");
    expect(item("job-2")).toMatchObject({ action: "skip", skip: "id_taken" });
    expect(plan.jobs.find((j) => j.job.id === "job-3")?.cell).toBe("my-project-legacy-2");
    expect(plan.jobs.find((j) => j.job.id === "job-5")?.cell).toBe("web");
  });
});

describe("state dir lock", () => {
  test("refused while a live process holds it; a stale lock is replaced", () => {
    const dir = tmp();
    const pidFile = join(dir, "planterd.pid");
    const release = lockStateDir(pidFile, (pid) => new Error(`held by ${pid}`));
    expect(() => lockStateDir(pidFile, (pid) => new Error(`held by ${pid}`))).toThrow(`held by ${process.pid}`);
    release();
    expect(existsSync(pidFile)).toBe(false);
    writeFileSync(pidFile, "4206649 123\n");
    const again = lockStateDir(pidFile, () => new Error("refused"));
    again();
    expect(readdirSync(dir)).toEqual([]);
  });
});
