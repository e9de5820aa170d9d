import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { MIGRATIONS, migrate, SCHEMA_VERSION, schemaVersion } from "../../lib/state/db.ts";
import type { MigrateReport } from "../../lib/state/migrate.ts";
import { cleanup, cli, pidAlive, ROOT, startDaemon, tempHome, waitFor } from "../harness.ts";

const MIGRATE = join(ROOT, "scripts", "migrate.ts");
const FIXTURE = join(ROOT, "test", "fixtures", "legacy");

const homes: string[] = [];
const procs: Subprocess[] = [];
afterAll(() => {
  for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  for (const h of homes) cleanup(h);
});

function home(): string {
  const h = tempHome("pt-mig");
  homes.push(h);
  return h;
}

/** Run `bun scripts/migrate.ts ARGS` with PLANTER_HOME=home and HOME=home (no real ~/.planter). */
const run = (h: string, args: string[], env: Record<string, string> = {}) =>
  cli(h, args, { script: MIGRATE, env: { HOME: h, ...env } });

async function runJson(h: string, args: string[], env: Record<string, string> = {}) {
  const r = await run(h, [...args, "--json"], env);
  if (r.code !== 0) throw new Error(`migrate exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as MigrateReport;
}

/** The fixture tree in `h/legacy`, plus a file that is not JSON (a static one would break `biome check`). */
function legacyTree(h: string): string {
  const root = join(h, "legacy");
  cpSync(FIXTURE, root, { recursive: true });
  writeFileSync(join(root, "jobs", "job-7.json"), '{"id": "job-7", "cell_id": "cell-1", "command": {');
  return root;
}

/** A legacy job recorded as running. */
function runningJob(root: string, id: string, argv: string[], pid: number, startedAt: number): void {
  const job = {
    id,
    cell_id: "cell-1",
    command: { argv, cwd: "/tmp", env: {} },
    stdout_path: join(root, "logs", `${id}.stdout.log`),
    stderr_path: join(root, "logs", `${id}.stderr.log`),
    started_at_ms: startedAt,
    finished_at_ms: null,
    pid,
    status: { type: "running", code: null },
  };
  writeFileSync(join(root, "jobs", `${id}.json`), JSON.stringify(job));
}

/** Start a process the way the prototype did (own session), its stdout appended to `log`. */
function spawnLegacy(argv: string[], log: string): Subprocess {
  const out = openSync(log, "a");
  const p = Bun.spawn(argv, { stdin: "ignore", stdout: out, stderr: "ignore", detached: true });
  closeSync(out);
  procs.push(p);
  return p;
}

/** Every file under `dir` with its bytes and mtime: to show that nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else out[p] = `${st.mtimeMs} ${readFileSync(p).toString("base64")}`;
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

const MALFORMED = [
  "cells/cell-5/cell.json",
  "cells/cell-9/cell.json",
  "jobs/job-7.json",
  "jobs/job-8.json",
  "jobs/job-9.json",
  "jobs/job-10.json",
];

/** A database at schema v1 (only the first migration) with one cell and one finished job. */
function oldDatabase(h: string): string {
  mkdirSync(join(h, "state"), { recursive: true, mode: 0o700 });
  const path = join(h, "state", "planter.db");
  const db = new Database(path, { create: true });
  migrate(db, MIGRATIONS.slice(0, 1));
  db.run(
    `INSERT INTO cells (name, dir, managed, env, limits, sandbox, created_at) VALUES ('old', '/tmp', 0, '{}', '{}', '{}', 1)`,
  );
  db.run(
    `INSERT INTO jobs (id, cell, argv, cwd, env, limits, sandbox_mode, backend, state, reason, exit_code, created_at)
     VALUES ('j-old', 'old', '["true"]', '/tmp', '{}', '{}', 'disabled', 'none', 'exited', 'exited', 0, 1)`,
  );
  db.close();
  return path;
}

const logText = async (
  c: { logs: (id: string, q: Record<string, string>) => Promise<{ data: string }> },
  id: string,
  stream = "stdout",
) => Buffer.from((await c.logs(id, { stream })).data, "base64").toString();

describe("migrate state: legacy import", () => {
  test("a full legacy tree is imported, readable through planterd, adopted jobs tracked; a re-run imports nothing", async () => {
    const h = home();
    const root = legacyTree(h);

    // Running jobs, written the way the prototype left them.
    const gate = join(h, "gate");
    Bun.spawnSync(["mkfifo", gate, `${gate}2`]);
    const liveArgv = ["sh", "-c", `echo first; read x < ${gate}; echo second; read y < ${gate}2`];
    let at = Date.now();
    const live = spawnLegacy(liveArgv, join(root, "logs", "job-20.stdout.log"));
    runningJob(root, "job-20", liveArgv, live.pid, at);
    await waitFor(() => readFileSync(join(root, "logs", "job-20.stdout.log"), "utf8") === "first\n", "job-20's output");
    at = Date.now();
    const endsOutside = spawnLegacy(["sleep", "300"], join(root, "logs", "job-21.stdout.log"));
    runningJob(root, "job-21", ["sleep", "300"], endsOutside.pid, at);
    // pid reuse: the pid is alive, but its process started an hour after the job.
    const reused = spawnLegacy(["sleep", "301"], join(h, "reused.log"));
    runningJob(root, "job-22", ["sleep", "301"], reused.pid, Date.now() - 3_600_000);
    // the pid started with the job but runs another command.
    const stranger = spawnLegacy(["sleep", "302"], join(h, "stranger.log"));
    runningJob(root, "job-23", ["make", "build"], stranger.pid, Date.now());

    const r = await runJson(h, ["state", "--from", root]);
    expect(r.dry_run).toBe(false);
    expect(r.database).toEqual({
      path: join(h, "state", "planter.db"),
      existed: false,
      from: 0,
      to: SCHEMA_VERSION,
      applied: MIGRATIONS.map((m) => m.version),
      backup: null,
    });
    expect(r.legacy.counts).toEqual({
      cells: { imported: 2, merged: 0, skipped: 0 },
      jobs: { imported: 9, adopted: 2, lost: 3, skipped: 1 },
    });
    expect(r.legacy.malformed.map((m) => m.path).sort()).toEqual(MALFORMED.map((p) => join(root, p)).sort());
    const problem = Object.fromEntries(r.legacy.malformed.map((m) => [m.path.slice(root.length + 1), m.message]));
    expect(problem["jobs/job-7.json"]).toStartWith("not JSON");
    expect(problem["jobs/job-8.json"]).toContain("→ at command");
    expect(problem["jobs/job-9.json"]).toContain("→ at command.argv");
    expect(problem["cells/cell-9/cell.json"]).toContain("→ at created_at_ms");
    expect(problem["jobs/job-10.json"]).toContain("does not match its file name");
    const item = (id: string) => r.legacy.items.find((i) => i.legacy_id === id);
    expect(item("job-6")).toMatchObject({ action: "skip", skip: "no_cell" });
    expect(item("cell-2")).toMatchObject({ action: "import", target: "my-project" });
    expect(item("job-22")?.note).toContain("belongs to another process");
    expect(item("job-23")?.note).toContain("does not adopt");

    // One event per imported item, in the same database.
    const db = new Database(join(h, "state", "planter.db"), { readonly: true });
    const kinds = db.query("SELECT kind, COUNT(*) AS n FROM events GROUP BY kind ORDER BY kind").all();
    db.close();
    expect(kinds).toEqual([
      { kind: "cell.imported", n: 2 },
      { kind: "job.imported", n: 9 },
      { kind: "state.migrated", n: 1 },
    ]);

    const d = await startDaemon({ home: h });
    try {
      const c = d.client;
      const cells = Object.fromEntries((await c.listCells()).cells.map((x) => [x.name, x]));
      expect(cells.web).toMatchObject({ dir: "/tmp", managed: false, env: { NODE_ENV: "test" } });
      expect(cells["my-project"]).toMatchObject({ dir: "/nonexistent/legacy/my-project", managed: false });

      const jobs = Object.fromEntries((await c.listJobs({ limit: 100 })).jobs.map((j) => [j.id, j]));
      const brief = (id: string) => {
        const j = jobs[id];
        return j && { cell: j.cell, state: j.state, reason: j.reason, exit_code: j.exit_code, signal: j.signal };
      };
      expect(brief("job-1")).toEqual({ cell: "web", state: "exited", reason: "exited", exit_code: 0, signal: null });
      expect(brief("job-2")).toEqual({ cell: "web", state: "failed", reason: "exited", exit_code: 3, signal: null });
      expect(brief("job-3")).toEqual({
        cell: "my-project",
        state: "killed",
        reason: "terminated_by_user",
        exit_code: 143,
        signal: "TERM",
      });
      expect(brief("job-4")).toEqual({
        cell: "my-project",
        state: "killed",
        reason: "timeout",
        exit_code: 137,
        signal: "KILL",
      });
      expect(jobs["job-4"]?.limits).toEqual({ timeout_ms: 5000 });
      expect(brief("job-5")).toEqual({ cell: "web", state: "lost", reason: "lost", exit_code: null, signal: null });
      expect(jobs["job-5"]?.message).toContain("is gone");
      for (const id of ["job-22", "job-23"]) expect(jobs[id]?.state).toBe("lost");
      for (const id of ["job-20", "job-21"])
        expect(jobs[id]).toMatchObject({ state: "running", pid: expect.any(Number) });
      expect(jobs["job-6"]).toBeUndefined();
      // planter never touches a process it could not prove was the job.
      expect(pidAlive(reused.pid) && pidAlive(stranger.pid)).toBe(true);

      // Logs, through the API and through `planter logs`.
      expect(await logText(c, "job-1")).toBe("hello\n");
      expect(await logText(c, "job-2", "stderr")).toBe("boom\n");
      expect(await logText(c, "job-4")).toBe("partial output before the timeout\n");
      const out = await cli(h, ["logs", "job-1"]);
      expect(out).toMatchObject({ code: 0, stdout: "hello\n" });

      // An adopted job's log keeps growing where planter reads it.
      expect(await logText(c, "job-20")).toBe("first\n");
      writeFileSync(gate, "go\n");
      await waitFor(
        async () => (await logText(c, "job-20")) === "first\nsecond\n",
        "job-20's next output through planter",
      );

      // The daemon tracks adopted jobs: one killed through the API, one ended from outside.
      const killed = await c.killJob("job-20", {});
      expect(killed.kill?.signal).toBe("TERM");
      await waitFor(async () => (await c.getJob("job-20")).state === "killed", "job-20 to be killed");
      expect(await c.getJob("job-20")).toMatchObject({ reason: "terminated_by_user", signal: "TERM" });
      expect(pidAlive(live.pid)).toBe(false);
      endsOutside.kill("SIGKILL");
      await waitFor(async () => (await c.getJob("job-21")).state === "lost", "job-21 to be recorded lost");
      expect(await c.getJob("job-21")).toMatchObject({ reason: "lost", exit_code: null });
    } finally {
      await d.stop();
    }

    // A second run imports nothing and says so.
    const again = await run(h, ["state", "--from", root]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("0 imported (0 adopted, 0 lost), 10 skipped");
    expect(again.stdout).toContain(`database: at v${SCHEMA_VERSION}, nothing to upgrade`);
    expect(again.stdout).toEndWith("nothing to do\n");
    const twice = await runJson(h, ["state", "--from", root]);
    expect(twice.nothing_to_do).toBe(true);
    expect(twice.legacy.counts).toEqual({
      cells: { imported: 0, merged: 0, skipped: 2 },
      jobs: { imported: 0, adopted: 0, lost: 0, skipped: 10 },
    });
  }, 60_000);

  test("--dry-run prints the counts and changes nothing, in the legacy tree or the state", async () => {
    const h = home();
    const root = legacyTree(h);
    const dbPath = oldDatabase(h);
    const before = { legacy: snapshot(root), state: snapshot(join(h, "state")) };

    const r = await run(h, ["state", "--dry-run", "--from", root]);
    expect(r.code).toBe(0);
    expect(r.stdout).toStartWith("dry run: nothing was changed\n");
    expect(r.stdout).toContain(`database: would be migrated from v1 to v${SCHEMA_VERSION}`);
    expect(r.stdout).toContain("cells: 2 would be imported, 0 skipped");
    expect(r.stdout).toContain("jobs: 5 would be imported (0 adopted, 1 lost), 1 skipped");
    for (const p of MALFORMED) expect(r.stderr).toContain(`migrate: skipped malformed ${join(root, p)}: `);

    const j = await runJson(h, ["state", "--dry-run", "--from", root]);
    expect(j.database).toMatchObject({ from: 1, to: SCHEMA_VERSION, backup: null });
    expect(j.legacy.counts.jobs).toEqual({ imported: 5, adopted: 0, lost: 1, skipped: 1 });

    expect({ legacy: snapshot(root), state: snapshot(join(h, "state")) }).toEqual(before);
    const db = new Database(dbPath, { readonly: true });
    expect(schemaVersion(db)).toBe(1);
    db.close();
  });

  test("--dry-run without any state creates nothing", async () => {
    const h = home();
    const root = legacyTree(h);
    const r = await runJson(h, ["state", "--dry-run", "--from", root]);
    expect(r.database).toMatchObject({ existed: false, from: 0, to: SCHEMA_VERSION });
    expect(existsSync(join(h, "state"))).toBe(false);
  });

  test("the default legacy root is PLANTER_STATE_DIR, else ~/.planter/state", async () => {
    const h = home();
    mkdirSync(join(h, ".planter"));
    const root = legacyTree(h);
    cpSync(root, join(h, ".planter", "state"), { recursive: true });
    const byHome = await runJson(h, ["state", "--dry-run"]);
    expect(byHome.legacy.root).toBe(join(h, ".planter", "state"));
    expect(byHome.legacy.counts.cells.imported).toBe(2);
    const byEnv = await runJson(h, ["state", "--dry-run"], { PLANTER_STATE_DIR: root });
    expect(byEnv.legacy.root).toBe(root);
  });

  test("migrate refuses while planterd runs on the state dir, and imports nothing", async () => {
    const h = home();
    const root = legacyTree(h);
    const d = await startDaemon({ home: h });
    try {
      const r = await run(h, ["state", "--from", root]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`planterd (pid ${d.proc.pid}) is running on the state dir ${join(h, "state")}`);
      expect(r.stderr).toContain("hint: stop it first");
      // A dry run still answers, with a warning.
      const dry = await run(h, ["state", "--dry-run", "--from", root]);
      expect(dry.code).toBe(0);
      expect(dry.stderr).toContain(`migrate: warning: planterd (pid ${d.proc.pid}) is running on this state dir`);
      const jobs = (await d.client.listJobs({ limit: 100 })).jobs;
      expect(jobs.filter((j) => j.id.startsWith("job-"))).toEqual([]);
      // The daemon's lock is still its own.
      expect(readFileSync(join(h, "state", "planterd.pid"), "utf8")).toStartWith(`${d.proc.pid} `);
    } finally {
      await d.stop();
    }
    // Stopped, the same command succeeds.
    const ok = await runJson(h, ["state", "--from", root]);
    expect(ok.legacy.counts.jobs.imported).toBe(5);
    expect(existsSync(join(h, "state", "planterd.pid"))).toBe(false);
  });

  test("usage errors exit 2", async () => {
    const h = home();
    expect((await run(h, ["state", "--bogus"])).code).toBe(2);
    expect((await run(h, [])).code).toBe(2);
    const missing = await run(h, ["state", "--from", join(h, "nowhere")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("no such directory");
    const notLegacy = await run(h, ["state", "--from", h]);
    expect(notLegacy.code).toBe(2);
    expect(notLegacy.stderr).toContain("is not a legacy planter state dir");
  });
});

describe("migrate state: database upgrade", () => {
  test("an old-schema database is backed up and upgraded; a second run does nothing", async () => {
    const h = home();
    const dbPath = oldDatabase(h);
    const r = await run(h, ["state"]);
    expect(r.code).toBe(0);
    const backups = readdirSync(join(h, "state")).filter((f) => f.endsWith(".bak"));
    expect(backups).toHaveLength(1);
    expect(backups[0]).toMatch(/^planter\.db\.v1\.\d{8}T\d{6}Z\.bak$/);
    const backup = join(h, "state", backups[0] as string);
    expect(r.stdout).toContain(`database: migrated from v1 to v${SCHEMA_VERSION} (backup: ${backup})`);
    expect(r.stdout).toContain(`legacy state: none at ${join(h, ".planter", "state")}`);
    expect(statSync(backup).mode & 0o777).toBe(0o600);

    const old = new Database(backup, { readonly: true });
    expect(schemaVersion(old)).toBe(1);
    expect(old.query("SELECT id FROM jobs").all()).toEqual([{ id: "j-old" }]);
    old.close();
    const db = new Database(dbPath, { readonly: true });
    expect(schemaVersion(db)).toBe(SCHEMA_VERSION);
    expect(db.query("SELECT id, state FROM jobs").all()).toEqual([{ id: "j-old", state: "exited" }]);
    expect(db.query("SELECT kind, data FROM events").all()).toEqual([
      {
        kind: "state.migrated",
        data: JSON.stringify({
          from: 1,
          to: SCHEMA_VERSION,
          applied: MIGRATIONS.slice(1).map((m) => m.version),
          backup,
          created: false,
        }),
      },
    ]);
    db.close();

    const again = await run(h, ["state"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`database: at v${SCHEMA_VERSION}, nothing to upgrade`);
    expect(again.stdout).toEndWith("nothing to do\n");
    expect(readdirSync(join(h, "state")).filter((f) => f.endsWith(".bak"))).toHaveLength(1);

    // planterd starts on the upgraded state and still knows the old job.
    await using d = await startDaemon({ home: h });
    expect((await d.client.getJob("j-old")).state).toBe("exited");
  });

  test("without a database or legacy state there is nothing to do, and nothing is created", async () => {
    const h = home();
    const r = await run(h, ["state"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("database: none yet");
    expect(r.stdout).toEndWith("nothing to do\n");
    expect(existsSync(join(h, "state"))).toBe(false);
  });
});
