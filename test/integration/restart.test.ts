import { Database } from "bun:sqlite";
import { afterAll, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readStatus } from "../../lib/jobs/recorder.ts";
import { cleanup, type DaemonHandle, pidAlive, startDaemon, tempHome, waitFor } from "../harness.ts";

const home = tempHome();
let d: DaemonHandle | null = null;
const spare: number[] = [];

afterAll(async () => {
  await d?.stop();
  for (const p of spare) {
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  }
  cleanup(home);
});

/** A job that blocks until the test writes a line to its FIFO, then exits with `code`. */
function gated(name: string, code: number): string[] {
  const fifo = join(home, name);
  Bun.spawnSync(["mkfifo", fifo]);
  return ["sh", "-c", `read line < ${fifo}; echo "released $line"; exit ${code}`];
}
const release = (name: string) => writeFileSync(join(home, name), "go\n");

test("a daemon killed with SIGKILL re-adopts live jobs and records what ended while it was down", async () => {
  d = await startDaemon({ home });
  const stays = await d.client.createJob({ argv: gated("fifo-stays", 5) });
  const endsWhileDown = await d.client.createJob({ argv: gated("fifo-down", 7) });
  const killedLater = await d.client.createJob({ argv: ["sleep", "300"] });
  expect([stays.state, endsWhileDown.state, killedLater.state]).toEqual(["running", "running", "running"]);

  await d.kill9();
  expect(pidAlive(stays.pid as number)).toBe(true);

  // While planterd is down: one job ends on its own, and its recorder writes the status.
  release("fifo-down");
  await waitFor(
    () => readStatus(join(home, "state", "jobs", endsWhileDown.id, "exit")) !== null,
    "the recorder to write the exit status",
  );

  // A row whose pid now belongs to another process (pid reuse): same pid, other start time.
  const stranger = Bun.spawn(["sleep", "300"]);
  spare.push(stranger.pid);
  // A row whose process is gone without a status: unknowable.
  const db = new Database(join(home, "state", "planter.db"));
  const insert = db.query(
    `INSERT INTO jobs (id, cell, argv, cwd, env, limits, sandbox_mode, backend, state, pid, start_time, created_at, started_at)
     VALUES (?, 'default', '["sleep","1"]', '/tmp', '{}', '{}', 'disabled', 'none', 'running', ?, ?, ?, ?)`,
  );
  insert.run("j-reused", stranger.pid, "1", Date.now(), Date.now());
  insert.run("j-vanished", 2 ** 22 + 12345, "1", Date.now(), Date.now());
  db.close();

  d = await startDaemon({ home });
  const c = d.client;

  const down = (await c.getJob(endsWhileDown.id)) as { state: string; exit_code: number | null; reason: string };
  expect([down.state, down.reason, down.exit_code]).toEqual(["failed", "exited", 7]);

  const reused = await c.getJob("j-reused");
  expect([reused.state, reused.reason]).toEqual(["lost", "lost"]);
  expect(pidAlive(stranger.pid)).toBe(true); // never mistaken for the job, never signalled

  expect((await c.getJob("j-vanished")).state).toBe("lost");
  expect((await c.getJob(stays.id)).state).toBe("running");

  // The adopted job's end is noticed and its code recorded.
  release("fifo-stays");
  const ended = await c.waitJob(stays.id, 20_000);
  expect([ended.job.state, ended.job.exit_code]).toEqual(["failed", 5]);
  const out = Buffer.from((await c.logs(stays.id, {})).data, "base64").toString();
  expect(out).toBe("released go\n");

  // An adopted job can be killed, tree and all.
  await c.killJob(killedLater.id, {});
  const k = await c.waitJob(killedLater.id, 20_000);
  expect([k.job.state, k.job.reason, k.job.signal]).toEqual(["killed", "terminated_by_user", "TERM"]);
  await waitFor(() => !pidAlive(killedLater.pid as number), "the adopted job's process to die");

  const kinds: string[] = [];
  for await (const e of c.events({})) kinds.push(`${e.kind} ${e.subject}`);
  expect(kinds).toContain(`job.adopted job/${stays.id}`);
  expect(kinds).toContain(`job.adopted job/${killedLater.id}`);
  expect(kinds).not.toContain(`job.adopted job/j-reused`);
  expect(kinds.filter((k) => k === `job.finished job/${endsWhileDown.id}`)).toHaveLength(1);
});

test("a kill requested before the restart still escalates after it", async () => {
  d?.proc.kill("SIGKILL");
  await d?.proc.exited;
  d = await startDaemon({ home, config: "[jobs]\nkill_grace_ms = 300\n" });
  const ready = join(home, "trap-ready");
  const j = await d.client.createJob({ argv: ["sh", "-c", `trap '' TERM; touch ${ready}; while :; do sleep 1; done`] });
  await waitFor(() => existsSync(ready), "the job to ignore TERM");
  await d.client.killJob(j.id, {});
  await d.kill9();
  d = await startDaemon({ home });
  const r = await d.client.waitJob(j.id, 20_000);
  expect([r.job.state, r.job.signal]).toEqual(["killed", "KILL"]);
});
