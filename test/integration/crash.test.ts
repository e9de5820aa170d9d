/**
 * planterd killed with SIGKILL while it launches jobs: every way it can die is settled precisely
 * after a restart, and nothing runs unseen. (The storm of random SIGKILLs under load: test/slow/crash-storm.test.ts.)
 */
import { Database } from "bun:sqlite";
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { recorderArgv } from "../../lib/jobs/recorder.ts";
import { FINAL, strays } from "../crash-fixture.ts";
import { cleanup, type DaemonHandle, pidAlive, startDaemon, tempHome, waitFor } from "../harness.ts";

const home = tempHome("pcr");
let d: DaemonHandle | null = null;
const spare: number[] = [];
const homes: string[] = [];

afterAll(async () => {
  await d?.stop();
  // Whatever failed: no job of these tests outlives them (recorders lead their job's group).
  const all = [home, ...homes];
  for (const p of [...spare, ...all.flatMap((h) => strays(h).flatMap((s) => [-s.pid, s.pid]))]) {
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  }
  for (const h of all) cleanup(h);
});

test("each way planterd can die while launching a job is settled precisely after a restart", async () => {
  const state = join(home, "state");
  const dirOf = (id: string) => join(state, "jobs", id);
  d = await startDaemon({ home });
  const gate = join(home, "gate");
  Bun.spawnSync(["mkfifo", gate]);
  const live = await d.client.createJob({ argv: ["sleep", "1000"] });
  const limited = await d.client.createJob({ argv: ["sleep", "1000"], limits: { timeout_ms: 1500 } });
  const endsWhileDown = await d.client.createJob({ argv: ["sh", "-c", `read x < ${gate}; exit 3`] });
  const forced = await d.client.createJob({ argv: ["sleep", "1000"] });
  await d.kill9();
  writeFileSync(gate, "go\n");
  await waitFor(() => existsSync(join(dirOf(endsWhileDown.id), "exit")), "the job to end while planterd is down");

  const db = new Database(join(state, "planter.db"));
  // What a planterd killed between its spawn and recording the job running leaves: `pending`.
  const unrecord = db.query(
    "UPDATE jobs SET state = 'pending', pid = NULL, start_time = NULL, started_at = NULL WHERE id = ?",
  );
  for (const j of [live, limited, endsWhileDown]) unrecord.run(j.id);
  // And one killed between recording `job kill --force` and sending the SIGKILL.
  db.query(
    "UPDATE jobs SET kill_signal = 'KILL', kill_force = 1, kill_requested_at = ?, kill_reason = 'forced_kill' WHERE id = ?",
  ).run(Date.now(), forced.id);
  const insert = db.query(
    `INSERT INTO jobs (id, cell, argv, cwd, env, limits, sandbox_mode, backend, state, created_at)
     VALUES (?, 'default', '["sleep","1000"]', '/tmp', '{}', '{}', 'disabled', 'none', 'pending', ?)`,
  );
  // Killed before its dir was made; after (with no recorder); with a recorder killed between
  // creating its pid file and writing it; and one whose pid file names a pid now someone else's.
  for (const id of ["j-nodir", "j-nospawn", "j-empty", "j-reused"]) insert.run(id, Date.now());
  db.close();
  for (const id of ["j-nospawn", "j-empty", "j-reused"]) mkdirSync(dirOf(id), { mode: 0o700 });
  writeFileSync(join(dirOf("j-empty"), "pid"), "");
  const stranger = Bun.spawn(["sleep", "1000"], { stdio: ["ignore", "ignore", "ignore"] });
  spare.push(stranger.pid);
  writeFileSync(join(dirOf("j-reused"), "pid"), `${stranger.pid}\n`);

  d = await startDaemon({ home });
  const c = d.client;
  for (const id of ["j-nodir", "j-nospawn", "j-empty"]) {
    const j = await c.getJob(id);
    expect([id, j.state, j.reason, j.pid]).toEqual([id, "failed", "spawn_error", null]);
    expect(j.message).toContain("the job never ran");
  }
  // A recorder that comes after the restart finds the job given up and runs nothing.
  const marker = join(home, "late-ran");
  const late = Bun.spawnSync(recorderArgv(join(dirOf("j-nospawn"), "exit"), ["/usr/bin/touch", marker]));
  expect([late.exitCode, late.stderr.toString()]).toEqual([
    125,
    "planter: planterd gave this job up before it started: it did not run\n",
  ]);
  expect(existsSync(marker)).toBe(false);

  // A pid that is not the job's recorder is never taken for it (nor signalled).
  const reused = await c.getJob("j-reused");
  expect([reused.state, reused.reason]).toEqual(["lost", "lost"]);
  expect(pidAlive(stranger.pid)).toBe(true);
  stranger.kill("SIGKILL");

  // The job that ended while planterd was down ran: its code is recorded.
  const ended = await c.getJob(endsWhileDown.id);
  expect([ended.state, ended.reason, ended.exit_code, ended.pid]).toEqual(["failed", "exited", 3, endsWhileDown.pid]);

  // The live ones are found by their recorders' pid files: running, killable, limited.
  const found = await c.getJob(live.id);
  expect([found.state, found.pid]).toEqual(["running", live.pid]);
  expect(found.started_at).not.toBeNull();
  await c.killJob(live.id, {});
  const k = await c.waitJob(live.id, 20_000);
  expect([k.job.state, k.job.reason]).toEqual(["killed", "terminated_by_user"]);
  await waitFor(() => !pidAlive(live.pid as number), "the found job's process to die");
  const t = await c.waitJob(limited.id, 20_000);
  expect([t.job.state, t.job.reason]).toEqual(["killed", "timeout"]);
  await waitFor(() => !pidAlive(limited.pid as number), "the timed-out job's process to die");
  const f = await c.waitJob(forced.id, 20_000);
  expect([f.job.state, f.job.reason, f.job.signal]).toEqual(["killed", "forced_kill", "KILL"]);
  await waitFor(() => !pidAlive(forced.pid as number), "the force-killed job's process to die");
  await d.stop();
  d = null;
  expect(strays(home)).toEqual([]);
}, 60_000);

test("a sandboxed job killed in its first moments leaves no process behind", async () => {
  const dir = tempHome("pck");
  homes.push(dir);
  d = await startDaemon({ home: dir, config: '[jobs]\nkill_grace_ms = 300\n[sandbox]\nmode = "enforced"\n' });
  // TERM at once: bwrap's outer process may die before its inner one (pid 1 of the job's
  // namespace) has set its parent-death signal; the inner one must not run on, unseen.
  const jobs = [];
  for (let i = 0; i < 40; i++) {
    const j = await d.client.createJob({ argv: ["/bin/sh", "-c", "exec sleep 1000"] });
    await d.client.killJob(j.id, {});
    jobs.push(j);
  }
  for (const j of jobs) {
    const r = await d.client.waitJob(j.id, 20_000);
    // Ended (a sandbox stopped while it starts may exit with its own code rather than the signal).
    expect([j.id, FINAL.has(r.job.state)]).toEqual([j.id, true]);
  }
  await waitFor(() => strays(dir).length === 0, "no job process left", 10_000).catch(() => undefined);
  expect(strays(dir)).toEqual([]);
  await d.stop();
  d = null;
}, 60_000);
