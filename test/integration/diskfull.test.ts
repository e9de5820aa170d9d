/**
 * A full state disk, for real: the state dir is a small tmpfs, jobs fill it. Ends wait in memory
 * and are recorded once space is back; the API answers E_UNAVAILABLE with what is full; /v1/ready
 * and doctor say so; a restarted daemon reads the real end from the status file; below the log
 * reserve a job that prints is stopped (disk_full) and a quiet one is not.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { EventRecord, Job } from "../../lib/api/contract.ts";
import { PlanterError } from "../../lib/api/errors.ts";
import { prepareStatus, readStatus, recorderArgv } from "../../lib/jobs/recorder.ts";
import { openState } from "../../lib/state/db.ts";
import { baseEnv, cleanup, cli, type DaemonHandle, ROOT, startDaemon, tempHome, waitFor } from "../harness.ts";

const isRoot = process.getuid?.() === 0;
const home = tempHome("pdf");
const state = join(home, "state");
const MiB = 1024 * 1024;
let d: DaemonHandle | null = null;
let mounted = false;
const groups: number[] = [];
/** Note a job's process group, to kill it whatever a test left. */
const started = (j: Job) => {
  if (j.pid) groups.push(j.pid);
  return j;
};

beforeAll(() => {
  if (!isRoot) return;
  mkdirSync(state, { mode: 0o700 });
  const r = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", state]);
  if (r.exitCode !== 0) throw new Error(`mount: ${r.stderr.toString()}`);
  mounted = true;
});

afterAll(async () => {
  if (d && d.proc.exitCode === null) await d.stop();
  // Jobs left by a failed test must not hold the mount: each leads its own process group.
  for (const pid of groups) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
  }
  if (mounted) {
    const r = Bun.spawnSync(["umount", state]);
    if (r.exitCode !== 0) Bun.spawnSync(["umount", "-l", state]);
  }
  cleanup(home);
});

const free = () => {
  const s = statfsSync(state);
  return s.bavail * s.bsize;
};

/**
 * A job that fills the state disk (a file in its cell dir, which is there, not its logs), waits
 * for its FIFO, then exits `code`.
 */
function filler(name: string, code: number): string[] {
  const fifo = join(home, name);
  Bun.spawnSync(["mkfifo", "-m", "0666", fifo]);
  return ["sh", "-c", `head -c 100M /dev/zero > ${name}.fill 2>/dev/null; read l < ${fifo}; exit ${code}`];
}
const release = (name: string) => writeFileSync(join(home, name), "go\n");

interface Ready {
  ready: boolean;
  state: string;
  disk: {
    free_bytes: number;
    min_free_bytes: number;
    below_reserve: boolean;
    writes_waiting: number;
    ends_waiting: number;
    message: string | null;
    hint: string | null;
  };
}

async function ready(): Promise<{ status: number; body: Ready }> {
  const res = await fetch("http://planterd/v1/ready", { unix: (d as DaemonHandle).socket });
  return { status: res.status, body: (await res.json()) as Ready };
}

async function refusal(p: Promise<unknown>): Promise<PlanterError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof PlanterError) return e;
    throw e;
  }
  throw new Error("expected a refusal");
}

async function doctorJson() {
  const p = Bun.spawn([process.execPath, join(ROOT, "scripts", "doctor.ts"), "--json"], {
    env: baseEnv(home, { PLANTER_STATE_DIR: join(home, "no-legacy-state") }),
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const json = JSON.parse(out) as { checks: { id: string; status: string; message: string; hint?: string }[] };
  return Object.fromEntries(json.checks.map((c) => [c.id, c]));
}

async function events(kind: string): Promise<EventRecord[]> {
  const all: EventRecord[] = [];
  for await (const e of (d as DaemonHandle).client.events({})) all.push(e);
  return all.filter((e) => e.kind === kind);
}

describe.skipIf(!isRoot)("state disk full (tmpfs, 64 MiB)", () => {
  test("an end the disk refuses waits, the API says E_UNAVAILABLE with what is full, ready and doctor report it, and the end is recorded once space is back", async () => {
    d = await startDaemon({ home });
    const c = d.client;
    const job = started(await c.createJob({ argv: filler("a", 7) }));
    await waitFor(() => free() === 0, "the job to fill the state disk");

    // A write that needs room: refused with a clear error, never a 500.
    const big = await refusal(c.createJob({ argv: ["true", ...Array(6).fill("x".repeat(100_000))] }));
    expect(big.code).toBe("E_UNAVAILABLE");
    expect(big.message).toContain("planterd cannot write its state: the disk is full (0 B free of 64 MiB on");
    expect(big.hint).toContain("planter job rm ID");
    expect(big.details).toMatchObject({ fault: "disk_full", code: "SQLITE_FULL", free_bytes: 0 });
    const run = await cli(home, ["run", "--", "true"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("planterd cannot write its state: the disk is full (0 B free of 64 MiB on");
    expect(run.stderr).toContain("hint: free space there");

    // The job ends while the disk is full: its end waits in memory.
    release("a");
    const waiting = await waitFor(async () => {
      const r = await ready();
      return r.body.disk.ends_waiting === 1 ? r : null;
    }, "the end to wait for the disk");
    expect(waiting.status).toBe(503);
    expect(waiting.body.ready).toBe(false);
    expect(waiting.body.state).toBe("disk_full");
    expect(waiting.body.disk.message).toContain("the disk is full");
    // The recorder wrote its status over the placeholder: the blocks were there before the job.
    expect(readStatus(join(state, "jobs", job.id, "exit"))).toBe(7);
    expect((await c.getJob(job.id)).state).toBe("running");

    // Killing a job that has ended is refused for what it is, not with a 500.
    const kill = await refusal(c.killJob(job.id, {}));
    expect(kill.code).toBe("E_CONFLICT");
    expect(kill.message).toContain("its end is not recorded yet");

    const doc = await doctorJson();
    expect(doc["daemon.reachable"]?.status).toBe("fail");
    expect(doc["daemon.reachable"]?.message).toContain("not ready: planterd cannot write its state: the disk is full");
    expect(doc["daemon.reachable"]?.message).toContain("1 of them job ends");
    expect(doc["state.disk-space"]?.status).toBe("fail");

    // Space comes back: the end is recorded, with its real reason and code.
    rmSync(join(job.cwd, "a.fill"));
    const ended = await c.waitJob(job.id, 20_000);
    expect([ended.job.state, ended.job.reason, ended.job.exit_code]).toEqual(["failed", "exited", 7]);
    await waitFor(async () => (await ready()).status === 200, "planterd to be ready again");
    const finished = await events("job.finished");
    expect(finished.filter((e) => e.subject === `job/${job.id}`).map((e) => e.data.exit_code)).toEqual([7]);
  }, 60_000);

  test("a job killed on the full disk dies at once; its kill and then its end are recorded once space is back", async () => {
    const c = (d as DaemonHandle).client;
    const job = started(
      await c.createJob({ argv: ["sh", "-c", "head -c 100M /dev/zero > k.fill 2>/dev/null; exec sleep 300"] }),
    );
    await waitFor(() => free() === 0, "the job to fill the state disk");
    const killed = await c.killJob(job.id, {});
    expect(killed.id).toBe(job.id);
    const r = await waitFor(async () => {
      const x = await ready();
      return x.body.disk.ends_waiting === 1 ? x : null;
    }, "the job to die and its end to wait behind its kill");
    expect(r.body.disk.writes_waiting).toBeGreaterThanOrEqual(2);
    rmSync(join(job.cwd, "k.fill"));
    const ended = await c.waitJob(job.id, 20_000);
    expect([ended.job.state, ended.job.reason, ended.job.signal]).toEqual(["killed", "terminated_by_user", "TERM"]);
  }, 60_000);

  test("the end of a job's input on the full disk: the job reads its end at once; the event is recorded once space is back", async () => {
    const c = (d as DaemonHandle).client;
    const seen = join(home, "eof-seen");
    // What the job saw is written outside the full disk (the job is unsandboxed here).
    const job = started(
      await c.createJob({ argv: ["sh", "-c", `cat > /dev/null; echo end > ${seen}; exec sleep 300`], stdin: true }),
    );
    await waitFor(async () => (await c.getJob(job.id)).state === "running", "the reader to run");
    const fill = started(
      await c.createJob({ argv: ["sh", "-c", "head -c 100M /dev/zero > e.fill 2>/dev/null; exec sleep 300"] }),
    );
    await waitFor(() => free() === 0, "the other job to fill the state disk");
    const r = await c.writeStdin(job.id, { data: Buffer.from("last line\n").toString("base64"), eof: true });
    expect(r).toEqual({ written: 10, eof: true });
    await waitFor(() => existsSync(seen), "the job to read the end of its input");
    // Ended for good: more input is refused as such, not as a disk error.
    const more = await refusal(c.writeStdin(job.id, { data: Buffer.from("x").toString("base64") }));
    expect([more.code, more.message]).toEqual([
      "E_CONFLICT",
      `the stdin of job ${job.id} is closed: its input was ended (eof)`,
    ]);
    for (const j of [job, fill]) await c.killJob(j.id, {});
    rmSync(join(fill.cwd, "e.fill"));
    for (const j of [job, fill]) await c.waitJob(j.id, 20_000);
    await waitFor(
      async () => (await events("job.stdin_closed")).some((e) => e.subject === `job/${job.id}`),
      "the end of input recorded once space is back",
    );
  }, 60_000);

  test("a daemon killed while an end waits, started on the full disk, refuses clearly; started after, it records the real end", async () => {
    const c = (d as DaemonHandle).client;
    const job = started(await c.createJob({ argv: filler("b", 5) }));
    await waitFor(() => free() === 0, "the job to fill the state disk");
    release("b");
    await waitFor(async () => (await ready()).body.disk.ends_waiting === 1, "the end to wait for the disk");
    await (d as DaemonHandle).kill9();
    d = null;

    const refused = await startDaemon({ home }).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(refused).toContain("planterd cannot write its state: the disk is full");

    rmSync(join(job.cwd, "b.fill"));
    d = await startDaemon({ home });
    const j = await d.client.getJob(job.id);
    expect([j.state, j.reason, j.exit_code]).toEqual(["failed", "exited", 5]);
  }, 60_000);

  test("planter job rm frees a full disk: the job's files go first, its end and removal are recorded after", async () => {
    if (d && d.proc.exitCode === null) await d.stop();
    d = await startDaemon({ home, config: "[logs]\nmin_free_bytes = 0\n" });
    const c = d.client;
    const old = await c.createJob({ argv: ["head", "-c", String(40 * MiB), "/dev/zero"] });
    expect((await c.waitJob(old.id, 20_000)).job.state).toBe("exited");
    const job = started(await c.createJob({ argv: filler("r", 3) }));
    await waitFor(() => free() === 0, "the job to fill the state disk");
    release("r");
    await waitFor(async () => (await ready()).body.disk.ends_waiting === 1, "the end to wait for the disk");

    const rm = await cli(home, ["job", "rm", old.id]);
    expect([rm.code, rm.stderr]).toEqual([0, ""]);
    const ended = await c.waitJob(job.id, 20_000);
    expect([ended.job.state, ended.job.reason, ended.job.exit_code]).toEqual(["failed", "exited", 3]);
    await waitFor(
      () =>
        c.getJob(old.id).then(
          () => false,
          (e: PlanterError) => e.code === "E_NOT_FOUND",
        ),
      "the removal to be recorded",
    );
    rmSync(join(job.cwd, "r.fill"));
  }, 60_000);

  test("the recorder writes the exit status on a full disk: over the placeholder made before the job", async () => {
    const dir = join(state, "recorder");
    mkdirSync(dir);
    // One dir each: a recorder claims its job dir (its `pid` file) first.
    mkdirSync(join(dir, "a"));
    mkdirSync(join(dir, "b"));
    const placed = join(dir, "a", "placed");
    const bare = join(dir, "b", "bare");
    prepareStatus(placed);
    // Fill what is left to the last byte.
    Bun.spawnSync(["sh", "-c", `head -c 100M /dev/zero > ${join(dir, "fill")}`]);
    expect(free()).toBe(0);
    for (const f of [placed, bare]) {
      const p = Bun.spawn(recorderArgv(f, ["sh", "-c", "exit 7"]), { stdio: ["ignore", "ignore", "ignore"] });
      expect(await p.exited).toBe(7);
    }
    expect(readStatus(placed)).toBe(7);
    expect(readStatus(bare)).toBeNull(); // what recorders did before: no room for a new file
    // A database that cannot be set up on the full disk is a full disk, not a damaged database
    // (whose advice, moving it aside, would lose every job).
    expect(() => openState(join(dir, "new.db"))).toThrow(/planterd cannot write its state: the disk is full/);
    rmSync(dir, { recursive: true });
  });

  // Unsandboxed jobs write their logs themselves; bwrap jobs through FIFOs that `cat` pumps.
  test.each([
    ["unsandboxed", "disabled"],
    ["bwrap", "enforced"],
  ] as const)(
    "below the log reserve a job whose output grows is stopped (disk_full); a quiet job runs on (%s)",
    async (_, mode) => {
      if (d && d.proc.exitCode === null) await d.stop();
      d = await startDaemon({
        home,
        config: `[logs]\nmin_free_bytes = ${8 * MiB}\n[monitor]\ngrace_ms = 200\n[sandbox]\nmode = "${mode}"\n`,
      });
      const c = d.client;
      // Leave 12 MiB: above the reserve, a few seconds of this job's output from it.
      writeFileSync(join(state, "c.fill"), Buffer.alloc(Math.max(0, free() - 12 * MiB)));
      const quiet = started(await c.createJob({ argv: ["sleep", "300"] }));
      const loud = started(
        await c.createJob({ argv: ["sh", "-c", "while :; do head -c 16384 /dev/zero; sleep 0.01; done"] }),
      );
      const ended = await c.waitJob(loud.id, 30_000);
      expect(ended.job.sandbox.mode).toBe(mode);
      expect(ended.job.state).toBe("killed");
      expect(ended.job.reason).toBe("disk_full");
      expect(ended.job.limit_exceeded?.limit).toBe("min_free_bytes");
      expect(ended.job.limit_exceeded?.max).toBe(8 * MiB);
      expect(ended.job.limit_exceeded?.value).toBeLessThan(8 * MiB);
      // Stopped with room to spare: the disk never filled.
      expect(free()).toBeGreaterThan(4 * MiB);
      const q = await c.getJob(quiet.id);
      expect([q.state, q.message]).toEqual(["running", null]);

      const status = await cli(home, ["job", "status", loud.id]);
      expect(status.stdout).toMatch(/reason: +disk_full: [\d.]+ MiB free < 8 MiB reserved on the state disk/);
      const hit = await events("job.limit_exceeded");
      expect(hit.find((e) => e.subject === `job/${loud.id}`)?.data).toMatchObject({
        limit: "min_free_bytes",
        reason: "disk_full",
        max: 8 * MiB,
      });
      const below = await ready();
      expect([below.status, below.body.state, below.body.disk.below_reserve]).toEqual([503, "disk_full", true]);
      expect(below.body.disk.message).toContain("below planter's log reserve");

      rmSync(join(state, "c.fill"));
      await waitFor(async () => (await ready()).status === 200, "planterd to be ready again");
      await c.killJob(quiet.id, { force: true });
      await c.waitJob(quiet.id, 20_000);
    },
    60_000,
  );

  test("a flood (yes, ~1 GB/s) is stopped at the reserve, caught between ticks by inotify", async () => {
    if (d && d.proc.exitCode === null) await d.stop();
    // A tick far longer than the flood takes: only the write-by-write check can stop it in time.
    d = await startDaemon({
      home,
      config: `[logs]\nmin_free_bytes = ${16 * MiB}\n[monitor]\ninterval_ms = 60000\ngrace_ms = 200\n`,
    });
    const flood = started(await d.client.createJob({ argv: ["yes"] }));
    const ended = await d.client.waitJob(flood.id, 30_000);
    expect([ended.job.state, ended.job.reason, ended.job.limit_exceeded?.limit]).toEqual([
      "killed",
      "disk_full",
      "min_free_bytes",
    ]);
    expect(free()).toBeGreaterThan(0);
    await d.client.removeJob(flood.id);
  }, 60_000);
});
