/**
 * A database emptied (0 bytes) beside job dirs: planterd starts with empty state but says so, on
 * stderr and with an event, and doctor's state.job-dirs fails with a fix that works.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, rmSync, truncateSync } from "node:fs";
import { join } from "node:path";
import type { EventRecord } from "../../lib/api/contract.ts";
import { baseEnv, cleanup, type DaemonHandle, ROOT, startDaemon, tempHome } from "../harness.ts";

const home = tempHome("pedb");
let d: DaemonHandle | null = null;

afterAll(async () => {
  if (d && d.proc.exitCode === null) await d.stop();
  cleanup(home);
});

async function doctorJobDirs() {
  const p = Bun.spawn([process.execPath, join(ROOT, "scripts", "doctor.ts"), "--json", "state.job-dirs"], {
    env: baseEnv(home, { PLANTER_STATE_DIR: join(home, "no-legacy-state") }),
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const json = JSON.parse(out) as { checks: { id: string; status: string; message: string; fix?: string }[] };
  return json.checks.find((c) => c.id === "state.job-dirs");
}

test("a 0-byte database beside job dirs: a warning on stderr, an event, and doctor's state.job-dirs fails with a fix", async () => {
  d = await startDaemon({ home });
  const job = await d.client.createJob({ argv: ["true"] });
  await d.client.waitJob(job.id, 20_000);
  expect((await doctorJobDirs())?.status).toBe("ok");
  await d.stop();

  const db = join(home, "state", "planter.db");
  truncateSync(db, 0);
  rmSync(`${db}-wal`, { force: true });
  rmSync(`${db}-shm`, { force: true });

  d = await startDaemon({ home });
  expect(d.stderr()).toContain(
    `planterd: warning: the state database ${db} is empty (0 bytes) but ${join(home, "state", "jobs")} holds 1 job dir: planterd starts with empty state`,
  );
  const events: EventRecord[] = [];
  for await (const e of d.client.events({})) events.push(e);
  expect(events.find((e) => e.kind === "state.database_empty")?.data).toMatchObject({
    bytes: 0,
    job_dirs: 1,
    path: db,
  });
  await expect(d.client.getJob(job.id)).rejects.toMatchObject({ code: "E_NOT_FOUND" });

  const check = await doctorJobDirs();
  expect(check?.status).toBe("fail");
  expect(check?.message).toContain(`records no job, but ${join(home, "state", "jobs")} holds 1 job dir (${job.id})`);
  // The fix moves the unknown dirs aside, logs and all; then the check passes.
  const fix = Bun.spawnSync(["sh", "-c", check?.fix ?? "false"]);
  expect(fix.exitCode).toBe(0);
  expect(existsSync(join(home, "state", "jobs.unknown", job.id, "stdout"))).toBe(true);
  expect((await doctorJobDirs())?.status).toBe("ok");

  // A second start finds no job dirs left: no warning again.
  await d.stop();
  d = await startDaemon({ home });
  expect(d.stderr()).not.toContain("warning: the state database");
}, 60_000);
