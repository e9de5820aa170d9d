import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { EventRecord, Job } from "../../lib/api/contract.ts";
import { treePids } from "../../lib/jobs/proc.ts";
import { readStatus } from "../../lib/jobs/recorder.ts";
import {
  bwrapReady,
  cleanup,
  cli,
  type DaemonHandle,
  pidAlive,
  raw,
  startDaemon,
  tempHome,
  waitFor,
} from "../harness.ts";

const MiB = 1024 * 1024;
const BUN = process.execPath;
/** A child that holds `mb` MiB of touched memory until killed; writes `mark` once it does. */
const grow = (mb: number, mark?: string) =>
  `${BUN} -e "globalThis.b=Buffer.alloc(${mb}*2**20,1);${mark ? `require('fs').writeFileSync('${mark}','1');` : ""}setInterval(()=>b[0]++,1e6)"`;

let d: DaemonHandle;
beforeAll(async () => {
  d = await startDaemon({ config: "[monitor]\ninterval_ms = 100\ngrace_ms = 1000\n" });
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

const finished = async (c: DaemonHandle, id: string) => (await c.client.waitJob(id, 30_000)).job;

async function eventsOf(c: DaemonHandle, id: string): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  for await (const e of c.client.events({ limit: 1000 })) if (e.subject === `job/${id}`) out.push(e);
  return out;
}

/**
 * Run `sh -c` with a script whose processes write their pids: `$$` to P.0 and each `P.n`
 * placeholder names a file for the pid of the process started before it. Returns the job and
 * the pids once all are written.
 */
async function treeJob(
  c: DaemonHandle,
  script: (pidFile: (n: number) => string) => string,
  count: number,
  limits: Record<string, number>,
): Promise<{ job: Job; pids: number[] }> {
  const base = join(c.home, `pids-${Math.random().toString(36).slice(2)}`);
  const file = (n: number) => `${base}.${n}`;
  const job = await c.client.createJob({ argv: ["sh", "-c", `echo $$ > ${file(0)}; ${script(file)}`], limits });
  const pids = await waitFor(() => {
    const files = Array.from({ length: count }, (_, i) => file(i));
    if (!files.every((f) => existsSync(f) && readFileSync(f, "utf8").trim())) return null;
    return files.map((f) => Number(readFileSync(f, "utf8").trim()));
  }, "the job's processes to write their pids");
  return { job, pids };
}

const allDead = (pids: number[]) => waitFor(() => pids.every((p) => !pidAlive(p)), "every process of the tree to die");

async function ready(c: DaemonHandle) {
  const r = await raw(c.socket, "GET", "/v1/ready");
  return r.json as unknown as {
    limits: { enforcement: string; cgroup_unavailable: string | null; ticks: number; interval_ms: number };
  };
}

describe("timeout", () => {
  test("a sleep past its timeout is killed, tree and all, with the observed time", async () => {
    const timeout = 1000;
    const { job, pids } = await treeJob(
      d,
      (p) => `sleep 300 & echo $! > ${p(1)}; setsid sleep 300 & echo $! > ${p(2)}; wait`,
      3,
      { timeout_ms: timeout },
    );
    const f = await finished(d, job.id);
    expect([f.state, f.reason, f.signal]).toEqual(["killed", "timeout", "TERM"]);
    expect(f.limit_exceeded?.limit).toBe("timeout_ms");
    expect(f.limit_exceeded?.max).toBe(timeout);
    expect(f.limit_exceeded?.value).toBeGreaterThanOrEqual(timeout);
    // Found near the deadline: within one 100 ms interval on an idle host; generous under load.
    const found = Date.parse(f.limit_exceeded?.at as string) - Date.parse(f.started_at as string);
    expect(found).toBeLessThan(timeout + 2000);
    expect(Date.parse(f.finished_at as string) - Date.parse(f.started_at as string)).toBeGreaterThanOrEqual(timeout);
    await allDead(pids);

    const ev = await eventsOf(d, job.id);
    const hit = ev.find((e) => e.kind === "job.limit_exceeded");
    expect(hit?.data).toEqual({
      limit: "timeout_ms",
      reason: "timeout",
      value: f.limit_exceeded?.value,
      max: timeout,
      enforcement: f.enforcement,
    });
    expect(ev.map((e) => e.kind)).toEqual([
      "job.created",
      "job.started",
      "job.limit_exceeded",
      "job.kill_requested",
      "job.finished",
    ]);
  });

  test("a job that ignores SIGTERM gets SIGKILL after the limit grace", async () => {
    const { job, pids } = await treeJob(
      d,
      (p) => `trap '' TERM; sleep 300 & echo $! > ${p(1)}; while :; do sleep 1; done`,
      2,
      { timeout_ms: 800 },
    );
    const f = await finished(d, job.id);
    expect([f.state, f.reason, f.signal]).toEqual(["killed", "timeout", "KILL"]);
    expect(Date.parse(f.finished_at as string) - Date.parse(f.kill?.requested_at as string)).toBeGreaterThanOrEqual(
      1000,
    );
    await allDead(pids);
  });

  test("a job that exits 0 from its TERM handler after the limit still ends with the limit", async () => {
    const ready = join(d.home, "handler-ready");
    const j = await d.client.createJob({
      argv: ["sh", "-c", `trap 'exit 0' TERM; touch ${ready}; while :; do sleep 0.05; done`],
      limits: { timeout_ms: 1500 },
    });
    await waitFor(() => existsSync(ready), "the handler to be set");
    const f = await finished(d, j.id);
    expect([f.state, f.reason, f.exit_code]).toEqual(["killed", "timeout", 0]);
    const run = await cli(d.home, ["job", "wait", j.id]);
    expect(run.code).toBe(1); // never a success
  });
});

describe("memory", () => {
  test("two children that each stay under the limit are killed when their sum passes it", async () => {
    // Each child holds ~80 MiB + the runtime (~25 MiB): ~105 MiB alone, ~210 MiB together.
    const { job, pids } = await treeJob(
      d,
      (p) => `${grow(80)} & echo $! > ${p(1)}; ${grow(80)} & echo $! > ${p(2)}; wait`,
      3,
      { max_rss_bytes: 160 * MiB },
    );
    const f = await finished(d, job.id);
    expect([f.state, f.reason]).toEqual(["killed", "memory_limit"]);
    expect(f.limit_exceeded?.limit).toBe("max_rss_bytes");
    expect(f.limit_exceeded?.max).toBe(160 * MiB);
    expect(f.limit_exceeded?.value).toBeGreaterThan(160 * MiB);
    await allDead(pids);

    const text = await cli(d.home, ["job", "status", job.id]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^reason: +memory_limit: \d+(\.\d)? MiB > 160 MiB$/m);
    expect(text.stdout).toMatch(
      /^limits: +memory 160 MiB, log 1 GiB, processes 4096 \(enforced by (monitor|cgroup v[12])\)$/m,
    );
    const json = JSON.parse((await cli(d.home, ["job", "status", job.id, "--json"])).stdout) as Job;
    expect(json.limit_exceeded).toEqual({
      limit: "max_rss_bytes",
      value: f.limit_exceeded?.value as number,
      max: 160 * MiB,
      at: f.limit_exceeded?.at as string,
    });
    expect(json.reason).toBe("memory_limit");
  });

  test("a sandboxed job's tree (bwrap, its own session) is summed and killed too", async () => {
    if (!(await bwrapReady(d))) return;
    const job = await d.client.createJob({
      argv: ["sh", "-c", `${grow(80)} & ${grow(80)} & wait`],
      limits: { max_rss_bytes: 160 * MiB },
      sandbox: { mode: "enforced" },
    });
    expect(job.sandbox.backend).toBe("bwrap");
    // Pids inside the sandbox are namespaced: collect the tree from the host side until it ends.
    const seen = new Set<number>();
    const buns = new Set<number>();
    for (;;) {
      const now = await d.client.getJob(job.id);
      for (const p of treePids(job.pid as number, job.pid as number)) {
        seen.add(p);
        // Read again until it has exec'd: a fork shows its parent's command line first.
        if (buns.has(p)) continue;
        try {
          const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
          if (cmd[0] === BUN && cmd[1] === "-e") buns.add(p);
        } catch {}
      }
      if (now.state !== "running") break;
      await Bun.sleep(5);
    }
    const f = await finished(d, job.id);
    expect([f.state, f.reason]).toEqual(["killed", "memory_limit"]);
    expect(buns.size).toBe(2);
    await allDead([...seen]);
  });
});

describe("log quota", () => {
  test("a flood on both streams is stopped; the stored log is cut to the quota exactly", async () => {
    const max = 64 * 1024;
    // Each flooder writes its pid, then waits for the gate: no byte is written before every
    // pid is known (a flood passes 64 KiB in microseconds and the tree dies with it).
    const go = join(d.home, "flood-go");
    const flooder = (pidFile: string, cmd: string) =>
      `sh -c 'echo $$ > ${pidFile}; while [ ! -e ${go} ]; do sleep 0.01; done; exec ${cmd}' &`;
    const { job, pids } = await treeJob(
      d,
      (p) => `${flooder(p(1), "yes out")} ${flooder(p(2), "yes err >&2")} wait`,
      3,
      { max_log_bytes: max },
    );
    writeFileSync(go, "");
    const f = await finished(d, job.id);
    expect([f.state, f.reason]).toEqual(["killed", "log_quota"]);
    expect(f.log_truncated).toBe(true);
    expect(f.limit_exceeded?.limit).toBe("max_log_bytes");
    expect(f.limit_exceeded?.value).toBeGreaterThan(max);
    await allDead(pids);

    const dir = join(d.home, "state", "jobs", job.id);
    const out = readFileSync(join(dir, "stdout"), "utf8");
    const err = readFileSync(join(dir, "stderr"), "utf8");
    expect(out.length + err.length).toBe(max);
    // What is kept is what was written first: whole prefixes of each stream.
    expect("out\n".repeat(max).startsWith(out)).toBe(true);
    expect("err\n".repeat(max).startsWith(err)).toBe(true);

    const ev = await eventsOf(d, job.id);
    const cut = ev.find((e) => e.kind === "job.log_truncated");
    expect(cut?.data.max).toBe(max);
    expect(cut?.data.kept).toEqual({ stdout: out.length, stderr: err.length });
    const written = cut?.data.written as { stdout: number; stderr: number };
    expect(written.stdout + written.stderr).toBeGreaterThan(max);
    expect(ev.map((e) => e.kind).slice(-2)).toEqual(["job.finished", "job.log_truncated"]);

    // A follower that had read past the cut is told the log is complete, not refused.
    const past = await d.client.logs(job.id, { offset: written.stdout });
    expect([past.data, past.eof, past.complete, past.size]).toEqual(["", true, true, out.length]);
  });

  test("planter run streams a flood, then reports the quota and exits with the signal's code", async () => {
    const r = await cli(d.home, ["run", "--max-log", "64K", "--", "yes"]);
    expect(r.code).toBe(143);
    expect(r.stdout.length).toBeGreaterThanOrEqual(64 * 1024);
    expect(r.stderr).toMatch(/killed: log_quota \(SIGTERM\) — log_quota: [\d.]+ [KM]iB > 64 KiB/);
    expect(r.stderr).toContain("its stored log keeps the first 64 KiB");
    expect(r.stderr).not.toContain("offset");
  });

  test("a job that writes exactly its quota is not stopped", async () => {
    const j = await d.client.createJob({ argv: ["head", "-c", "4096", "/dev/zero"], limits: { max_log_bytes: 4096 } });
    const f = await finished(d, j.id);
    expect([f.state, f.reason, f.exit_code, f.log_truncated]).toEqual(["exited", "exited", 0, false]);
  });
});

describe("within limits", () => {
  test("a job inside every limit, sampled while it holds memory, exits with its own code", async () => {
    const mark = join(d.home, "allocated");
    const fifo = join(d.home, "gate");
    Bun.spawnSync(["mkfifo", fifo]);
    const j = await d.client.createJob({
      argv: [
        "sh",
        "-c",
        `${grow(80, mark)} & head -c 102400 /dev/zero | tr '\\0' x; read l < ${fifo}; kill $!; exit 7`,
      ],
      limits: { timeout_ms: 60_000, max_rss_bytes: 160 * MiB, max_log_bytes: MiB },
    });
    await waitFor(() => existsSync(mark), "the child to hold its memory");
    // Let the monitor sample the job twice at its peak before it ends.
    const seen = (await ready(d)).limits.ticks;
    await waitFor(async () => (await ready(d)).limits.ticks >= seen + 2, "two monitor ticks");
    writeFileSync(fifo, "go\n");
    const f = await finished(d, j.id);
    expect([f.state, f.reason, f.exit_code]).toEqual(["failed", "exited", 7]);
    expect([f.limit_exceeded, f.log_truncated, f.kill]).toEqual([null, false, null]);
    expect(Buffer.from((await d.client.logs(j.id, {})).data, "base64").toString()).toBe("x".repeat(102400));
    expect((await eventsOf(d, j.id)).map((e) => e.kind)).not.toContain("job.limit_exceeded");
  });

  test("GET /v1/ready and every job say how limits are enforced", async () => {
    const r = await ready(d);
    expect(["monitor", "cgroup v2", "cgroup v1"]).toContain(r.limits.enforcement);
    if (r.limits.enforcement === "monitor") expect(r.limits.cgroup_unavailable).toBeTruthy();
    expect(r.limits.interval_ms).toBe(100);
    const j = await d.client.createJob({ argv: ["true"], limits: { timeout_ms: 10_000 } });
    expect(j.enforcement).toBe(r.limits.enforcement as Job["enforcement"]);
  });
});

describe("exit versus limit", () => {
  test("a job that ends before the monitor can act keeps reason exited", async () => {
    // The daemon is stopped (SIGSTOP) before the timeout and continued only after the job has
    // passed its timeout, ended and written its status: its own end came first, deterministically.
    const c = await startDaemon({ config: "[monitor]\ninterval_ms = 50\n" });
    try {
      const fifo = join(c.home, "gate");
      Bun.spawnSync(["mkfifo", fifo]);
      const j = await c.client.createJob({
        argv: ["sh", "-c", `read l < ${fifo}; exit 3`],
        limits: { timeout_ms: 1500 },
      });
      c.proc.kill("SIGSTOP");
      try {
        await waitFor(() => Date.now() > Date.parse(j.started_at as string) + 1500 + 100, "the timeout to pass");
        writeFileSync(fifo, "go\n");
        await waitFor(() => readStatus(join(c.home, "state", "jobs", j.id, "exit")) !== null, "the job's exit status");
      } finally {
        c.proc.kill("SIGCONT");
      }
      const f = await finished(c, j.id);
      expect([f.state, f.reason, f.exit_code]).toEqual(["failed", "exited", 3]);
      expect([f.limit_exceeded, f.kill]).toEqual([null, null]);
      expect((await eventsOf(c, j.id)).map((e) => e.kind)).not.toContain("job.limit_exceeded");
    } finally {
      await c.stop();
      cleanup(c.home);
    }
  });
});

describe("restart", () => {
  test("a re-adopted job is still killed at its timeout, counted from its real start", async () => {
    const home = tempHome();
    let c = await startDaemon({ home, config: "[monitor]\ninterval_ms = 50\n" });
    try {
      const timeout = 3000;
      const { job, pids } = await treeJob(c, (p) => `sleep 300 & echo $! > ${p(1)}; wait`, 2, {
        timeout_ms: timeout,
      });
      await c.kill9();
      const started = Date.parse(job.started_at as string);
      await waitFor(() => Date.now() > started + timeout + 50, "the timeout to pass while planterd is down", 20_000);
      expect(pids.every(pidAlive)).toBe(true); // nothing enforces limits while planterd is down
      const restartAt = Date.now();
      c = await startDaemon({ home });
      const f = await finished(c, job.id);
      expect([f.state, f.reason]).toEqual(["killed", "timeout"]);
      const requested = Date.parse(f.kill?.requested_at as string);
      expect(requested - started).toBeGreaterThanOrEqual(timeout);
      // Counted from the adoption, the kill could not come before restartAt + timeout.
      expect(requested).toBeLessThan(restartAt + timeout);
      expect(f.limit_exceeded?.value).toBeGreaterThanOrEqual(timeout);
      await allDead(pids);
      const kinds = (await eventsOf(c, job.id)).map((e) => e.kind);
      expect(kinds.indexOf("job.adopted")).toBeLessThan(kinds.indexOf("job.limit_exceeded"));
    } finally {
      await c.stop();
      cleanup(home);
    }
  });
});

describe("invalid limits", () => {
  const BAD: [string, unknown][] = [
    ["timeout_ms", 0],
    ["timeout_ms", -1],
    ["timeout_ms", 1.5],
    ["timeout_ms", "30s"],
    ["timeout_ms", 31 * 86_400_000],
    ["max_rss_bytes", 0],
    ["max_rss_bytes", -512],
    ["max_rss_bytes", 2 ** 53],
    ["max_log_bytes", 0],
    ["max_log_bytes", null],
    ["max_log_bytes", 2 ** 51],
  ];

  test.each(BAD)("the API refuses %s = %p for jobs and cells", async (key, value) => {
    const job = await raw(d.socket, "POST", "/v1/jobs", JSON.stringify({ argv: ["true"], limits: { [key]: value } }));
    expect(job.status).toBe(400);
    expect(job.json.error?.code).toBe("E_BAD_REQUEST");
    expect(job.json.error?.details?.path).toBe(`limits.${key}`);
    const cell = await raw(d.socket, "POST", "/v1/cells", JSON.stringify({ name: "badlim", limits: { [key]: value } }));
    expect(cell.status).toBe(400);
    expect(cell.json.error?.details?.path).toBe(`limits.${key}`);
  });

  test.each([
    ["--timeout", "0s", "more than 0"],
    ["--timeout=-5s", null, "must be a duration"],
    ["--timeout", "30", "add a unit"],
    ["--timeout", "soon", "must be a duration"],
    ["--timeout", "365d", "at most 30d"],
    ["--max-rss", "0", "more than 0 bytes"],
    ["--max-rss=-512M", null, "must be a size"],
    ["--max-rss", "lots", "must be a size"],
    ["--max-rss", "9999999T", "at most 1024T"],
    ["--max-log", "0K", "more than 0 bytes"],
    ["--max-log", "10Q", "must be a size"],
  ])("the CLI refuses %s %s as a usage error", async (flag, value, message) => {
    const args = value === null ? [flag] : [flag, value];
    const before = (await d.client.listJobs({ limit: 1000 })).jobs.length;
    for (const cmd of [
      ["run", ...args, "--", "true"],
      ["cell", "create", "badcli", ...args],
    ]) {
      const r = await cli(d.home, cmd);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(flag.split("=")[0] as string);
      expect(r.stderr).toContain(message as string);
    }
    expect((await d.client.listJobs({ limit: 1000 })).jobs.length).toBe(before);
    expect((await d.client.listCells()).cells.map((c) => c.name)).not.toContain("badcli");
  });

  test("the CLI takes human units; cell defaults and job limits merge", async () => {
    const r = await cli(d.home, [
      "run",
      "--timeout",
      "30s",
      "--max-rss",
      "512M",
      "--max-log",
      "10MiB",
      "--detach",
      "--json",
      "--",
      "true",
    ]);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as Job).limits).toEqual({
      timeout_ms: 30_000,
      max_rss_bytes: 512 * MiB,
      max_log_bytes: 10 * MiB,
      max_pids: 4096,
    });
    const c = await cli(d.home, ["cell", "create", "limited", "--timeout", "1m", "--max-log", "1M"]);
    expect(c.code).toBe(0);
    expect((await cli(d.home, ["cell", "show", "limited"])).stdout).toMatch(/^limits: +timeout 1m, log 1 MiB$/m);
    const j = await cli(d.home, ["run", "--cell", "limited", "--max-pids", "64", "--detach", "--json", "--", "true"]);
    expect((JSON.parse(j.stdout) as Job).limits).toEqual({ timeout_ms: 60_000, max_log_bytes: 1 * MiB, max_pids: 64 });
  });
});
