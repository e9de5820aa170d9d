import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { PlanterError } from "../../lib/api/errors.ts";
import { cleanup, type DaemonHandle, pidAlive, startDaemon, waitFor } from "../harness.ts";

let d: DaemonHandle;
beforeAll(async () => {
  d = await startDaemon({ config: "[jobs]\nkill_grace_ms = 2000\n" });
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

const run = (argv: string[], extra: Record<string, unknown> = {}) => d.client.createJob({ argv, ...extra });
const finished = async (id: string) => (await d.client.waitJob(id, 20_000)).job;
const output = async (id: string, stream: "stdout" | "stderr" = "stdout") =>
  Buffer.from((await d.client.logs(id, { stream })).data, "base64").toString();

describe("exit codes and signals", () => {
  test("a zero exit is exited 0", async () => {
    const j = await run(["true"]);
    expect(j.state).toBe("running");
    expect(j.pid).toBeGreaterThan(0);
    const f = await finished(j.id);
    expect([f.state, f.reason, f.exit_code, f.signal]).toEqual(["exited", "exited", 0, null]);
    expect(f.finished_at).not.toBeNull();
  });

  test("a non-zero exit is failed with its code", async () => {
    const f = await finished((await run(["sh", "-c", "exit 42"])).id);
    expect([f.state, f.reason, f.exit_code]).toEqual(["failed", "exited", 42]);
  });

  test("shell builtins are not run in place of programs", async () => {
    // `exit` is no program: the recorder shell must not run its own builtin.
    const j = await run(["exit", "3"]);
    expect([j.state, j.reason]).toEqual(["failed", "spawn_error"]);
    expect(j.message).toContain("exit: command not found");
  });

  test("a missing program is a spawn_error with a message", async () => {
    const j = await run(["/nonexistent/prog"]);
    expect([j.state, j.reason, j.exit_code]).toEqual(["failed", "spawn_error", null]);
    expect(j.message).toContain("/nonexistent/prog");
  });

  test("a missing cwd is refused before anything runs, naming it", async () => {
    const before = (await d.client.listJobs({})).jobs.length;
    const e = (await run(["true"], { cwd: "/nonexistent-dir-xyz" }).catch((x) => x)) as PlanterError;
    expect(e.code).toBe("E_BAD_REQUEST");
    expect(e.message).toBe("cwd /nonexistent-dir-xyz does not exist");
    expect((await d.client.listJobs({})).jobs.length).toBe(before);
  });

  test("stdout and stderr go to separate logs", async () => {
    const j = await run(["sh", "-c", "echo to-out; echo to-err >&2"]);
    await finished(j.id);
    expect(await output(j.id)).toBe("to-out\n");
    expect(await output(j.id, "stderr")).toBe("to-err\n");
  });
});

describe("environment and cwd", () => {
  test("the daemon's environment does not leak; job and cell env are set", async () => {
    await d.client.createCell({ name: "envcell", env: { FROM_CELL: "c", OVERRIDE: "cell" } });
    const j = await run(["env"], { cell: "envcell", env: { FROM_JOB: "j", OVERRIDE: "job" } });
    await finished(j.id);
    const env = Object.fromEntries(
      (await output(j.id))
        .trim()
        .split("\n")
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(env.FROM_CELL).toBe("c");
    expect(env.FROM_JOB).toBe("j");
    expect(env.OVERRIDE).toBe("job");
    expect(env.PLANTER_JOB_ID).toBe(j.id);
    expect(env.PLANTER_CELL).toBe("envcell");
    // The harness gives the daemon PLANTER_HOME and NO_COLOR: neither may reach the job.
    expect(env.PLANTER_HOME).toBeUndefined();
    expect(env.NO_COLOR).toBeUndefined();
    expect(Object.keys(env).sort()).toEqual(
      ["FROM_CELL", "FROM_JOB", "HOME", "OVERRIDE", "PATH", "PLANTER_CELL", "PLANTER_JOB_ID", "PWD", "TZ"].sort(),
    );
  });

  test("cwd defaults to the cell dir", async () => {
    const j = await run(["pwd"]);
    await finished(j.id);
    expect((await output(j.id)).trim()).toBe(join(d.home, "state", "cells", "default"));
  });

  test("cwd can be set", async () => {
    const j = await run(["pwd"], { cwd: "/tmp" });
    await finished(j.id);
    expect((await output(j.id)).trim()).toBe("/tmp");
  });

  test("stdin is empty", async () => {
    const j = await run(["sh", "-c", "cat; echo end"]);
    const f = await finished(j.id);
    expect(f.exit_code).toBe(0);
    expect(await output(j.id)).toBe("end\n");
  });
});

describe("kill", () => {
  /** A job whose tree has a child and a grandchild that left the group with setsid. */
  async function treeJob(): Promise<{ job: Job; pids: number[] }> {
    const pidFile = join(d.home, `pids-${Math.random().toString(36).slice(2)}`);
    const script = `sleep 300 & echo $! > ${pidFile}.1; setsid sleep 300 & echo $! > ${pidFile}.2; echo $$ > ${pidFile}.0; wait`;
    const job = await run(["sh", "-c", script]);
    const pids = await waitFor(() => {
      const files = [0, 1, 2].map((i) => `${pidFile}.${i}`);
      if (!files.every((f) => existsSync(f) && readFileSync(f, "utf8").trim())) return null;
      return files.map((f) => Number(readFileSync(f, "utf8").trim()));
    }, "the job tree to start");
    return { job, pids };
  }

  test("SIGTERM ends the whole tree, grandchildren included", async () => {
    const { job, pids } = await treeJob();
    expect(pids.every(pidAlive)).toBe(true);
    const k = await d.client.killJob(job.id, {});
    expect(k.kill?.signal).toBe("TERM");
    const f = await finished(job.id);
    expect([f.state, f.reason]).toEqual(["killed", "terminated_by_user"]);
    await waitFor(() => pids.every((p) => !pidAlive(p)), "every process of the tree to die");
  });

  test("force kills at once with SIGKILL", async () => {
    const { job, pids } = await treeJob();
    await d.client.killJob(job.id, { force: true });
    const f = await finished(job.id);
    expect([f.state, f.reason, f.signal]).toEqual(["killed", "forced_kill", "KILL"]);
    await waitFor(() => pids.every((p) => !pidAlive(p)), "every process of the tree to die");
  });

  test("a job that ignores SIGTERM is killed after the grace period", async () => {
    const ready = join(d.home, "trap-ready");
    const j = await run(["sh", "-c", `trap '' TERM; touch ${ready}; while :; do sleep 1; done`]);
    await waitFor(() => existsSync(ready), "the trap to be set");
    await d.client.killJob(j.id, {});
    const f = await finished(j.id);
    expect(f.state).toBe("killed");
    expect(f.signal).toBe("KILL");
  });

  test("killing a finished job is a conflict", async () => {
    const j = await run(["true"]);
    await finished(j.id);
    const e = await d.client.killJob(j.id, {}).catch((x) => x);
    expect(e).toBeInstanceOf(PlanterError);
    expect((e as PlanterError).code).toBe("E_CONFLICT");
  });

  test("a job killed from outside planter is recorded with its signal", async () => {
    const j = await run(["sleep", "300"]);
    process.kill(-(j.pid as number), "SIGKILL");
    const f = await finished(j.id);
    expect([f.state, f.signal, f.exit_code]).toEqual(["failed", "KILL", null]);
  });
});

describe("wait", () => {
  test("wait times out on a running job", async () => {
    const j = await run(["sleep", "300"]);
    const r = await d.client.waitJob(j.id, 50);
    expect(r.timed_out).toBe(true);
    expect(r.job.state).toBe("running");
    await d.client.killJob(j.id, { force: true });
    expect((await d.client.waitJob(j.id, 20_000)).timed_out).toBe(false);
  });
});

describe("idempotency", () => {
  test("the same request_ref and body return the first job", async () => {
    const a = await run(["true"], { request_ref: "ref-1" });
    const b = await run(["true"], { request_ref: "ref-1" });
    expect(b.id).toBe(a.id);
    const all = await d.client.listJobs({ limit: 1000 });
    expect(all.jobs.filter((j) => j.request_ref === "ref-1")).toHaveLength(1);
  });

  test("the same request_ref with another body conflicts", async () => {
    await run(["true"], { request_ref: "ref-2" });
    const e = await run(["false"], { request_ref: "ref-2" }).catch((x) => x);
    expect((e as PlanterError).code).toBe("E_IDEMPOTENCY_CONFLICT");
  });
});

describe("list and remove", () => {
  test("list filters by cell and state and pages with after", async () => {
    await d.client.createCell({ name: "pages" });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await run(["true"], { cell: "pages" })).id);
    for (const id of ids) await finished(id);
    const p1 = await d.client.listJobs({ cell: "pages", limit: 2 });
    expect(p1.jobs.map((j) => j.id)).toEqual(ids.slice(0, 2));
    const p2 = await d.client.listJobs({ cell: "pages", limit: 2, after: p1.next_after ?? "" });
    expect(p2.jobs.map((j) => j.id)).toEqual(ids.slice(2, 4));
    const p3 = await d.client.listJobs({ cell: "pages", limit: 2, after: p2.next_after ?? "" });
    expect(p3.jobs.map((j) => j.id)).toEqual(ids.slice(4));
    expect(p3.next_after).toBeNull();
    const exited = await d.client.listJobs({ cell: "pages", state: "exited" });
    expect(exited.jobs).toHaveLength(5);
    expect((await d.client.listJobs({ cell: "pages", state: "running" })).jobs).toHaveLength(0);
  });

  test("a running job cannot be removed; a finished one is removed with its logs", async () => {
    const j = await run(["sleep", "300"]);
    const e = await d.client.removeJob(j.id).catch((x) => x);
    expect((e as PlanterError).code).toBe("E_CONFLICT");
    await d.client.killJob(j.id, { force: true });
    await finished(j.id);
    const dir = join(d.home, "state", "jobs", j.id);
    expect(existsSync(dir)).toBe(true);
    expect(await d.client.removeJob(j.id)).toEqual({ removed: j.id });
    expect(existsSync(dir)).toBe(false);
    expect(((await d.client.getJob(j.id).catch((x) => x)) as PlanterError).code).toBe("E_NOT_FOUND");
  });
});

describe("jobs one user may have at once", () => {
  test("past [jobs] max_running_per_uid a job is refused (503, E_UNAVAILABLE, the count and the key); one ending makes room", async () => {
    const c = await startDaemon({ config: "[jobs]\nmax_running_per_uid = 2\nkill_grace_ms = 200\n" });
    try {
      const a = await c.client.createJob({ argv: ["sleep", "60"] });
      const b = await c.client.createJob({ argv: ["sleep", "60"] });
      const e = (await c.client.createJob({ argv: ["true"] }).catch((x) => x)) as PlanterError;
      expect([e.code, e.status, e.message]).toEqual([
        "E_UNAVAILABLE",
        503,
        expect.stringContaining(
          "already has 2 jobs pending or running, the most one user may ([jobs] max_running_per_uid = 2)",
        ),
      ]);
      expect((await c.client.listJobs({})).jobs.map((j) => j.id)).toEqual([a.id, b.id]);
      await c.client.killJob(a.id, { force: true });
      await c.client.waitJob(a.id, 20_000);
      const next = await c.client.createJob({ argv: ["true"] });
      expect((await c.client.waitJob(next.id, 20_000)).job.exit_code).toBe(0);
      await c.client.killJob(b.id, { force: true });
    } finally {
      await c.stop();
      cleanup(c.home);
    }
  });
});
