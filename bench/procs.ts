/**
 * 11. Monitor and kill on a host with many processes (#13): what planterd costs when the host runs
 * thousands of processes that are not its jobs. The benchmark starts its own idle sleepers (one
 * `sh` forking `sleep`s, in a process group of its own, killed after, whatever happens), then for
 * each variant — cgroups where the host gives them (`auto`: cgroup v1 here as root) and
 * `[monitor] cgroup = "off"` (the tracker) — measures:
 *   (a) planterd's CPU over 10 s with one limited `sleep` job among ~3000 host processes;
 *   (b) `POST /v1/jobs/{id}/kill` (SIGTERM) latency and kill → end recorded, at ~4000;
 *   (c) planterd's CPU with 1000 limited jobs;
 *   (d) 900 jobs adopted after a SIGKILL of planterd: its CPU before and after, and how soon the
 *       end of an adopted job whose recorder is SIGKILLed from outside is recorded.
 * With `PLANTER_BENCH_BASE=<checkout>` (another clone at an older commit, with node_modules), the
 * same figures for that code are measured interleaved, as a baseline.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../lib/api/client.ts";
import type { Job } from "../lib/api/contract.ts";
import { baseEnv, cleanup, ROOT, tempHome, waitFor } from "../test/harness.ts";
import { BENCH_CONFIG, cpuMs, get, header, median, note, report, spread, within } from "./common.ts";

const BENCH = "11 procs";
const INTERVAL_MS = 250;
const MEASURE_MS = 10_000;
const MANY = Number(process.env.BENCH_MANY ?? 1000);
const ADOPTED = Number(process.env.BENCH_ADOPTED ?? 900);
const MiB = 1024 * 1024;
/** Every limit, as bench 8 sets them: a timeout, memory, log. */
const LIMITS = { timeout_ms: 3_600_000, max_rss_bytes: 1024 * MiB, max_log_bytes: 1024 * MiB };

interface Variant {
  name: string;
  root: string;
  cgroup: "auto" | "off";
}

interface Planterd {
  home: string;
  socket: string;
  client: Client;
  proc: Subprocess;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Processes on the host now. */
function hostProcs(): number {
  let n = 0;
  for (const name of readdirSync("/proc")) if (name.charCodeAt(0) >= 48 && name.charCodeAt(0) <= 57) n++;
  return n;
}

let sleepers: Subprocess[] = [];
/** Every planterd started here and the process group of every job: killed at exit, whatever happened. */
const daemons = new Set<Subprocess>();
const jobGroups = new Set<number>();
const killQuietly = (target: number) => {
  try {
    process.kill(target, "SIGKILL");
  } catch {
    // gone
  }
};
const killSleepers = () => {
  for (const s of sleepers) killQuietly(-s.pid);
  sleepers = [];
};
process.on("exit", () => {
  killSleepers();
  for (const d of daemons) killQuietly(d.pid);
  for (const g of jobGroups) killQuietly(-g);
});

/** `n` more idle sleepers (15 min at most), in a process group of their own. */
async function addSleepers(n: number): Promise<void> {
  const loop = `i=0; while [ $i -lt ${n} ]; do sleep 900 >/dev/null & i=$((i+1)); done; echo ready; exec sleep 900 >/dev/null`;
  const sh = Bun.spawn(["sh", "-c", loop], { detached: true, stdin: "ignore", stdout: "pipe", stderr: "ignore" });
  sleepers.push(sh);
  // The loop has forked every sleeper when it says so.
  const reader = sh.stdout.getReader();
  let said = "";
  await within(
    120_000,
    `${n} sleepers to start`,
    (async () => {
      while (!said.includes("ready")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the sleepers' shell ended before it started them: ${said}`);
        said += new TextDecoder().decode(value);
      }
    })(),
  );
  reader.releaseLock();
}

/** planterd from `v.root` in a fresh home (or `home`, to restart one). */
async function planterd(v: Variant, home = tempHome("pb")): Promise<Planterd> {
  const config = `${BENCH_CONFIG}[monitor]\ninterval_ms = ${INTERVAL_MS}\ncgroup = "${v.cgroup}"\n`;
  await Bun.write(join(home, "config.toml"), `${config}[jobs]\nroot_peer_user = "nobody"\nmax_running_per_uid = 0\n`);
  const socket = join(home, "run", "planterd.sock");
  const proc = Bun.spawn([process.execPath, join(v.root, "scripts", "planter.ts"), "daemon"], {
    env: baseEnv(home),
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
  });
  daemons.add(proc);
  const client = new Client(socket);
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`planterd (${v.name}) exited ${proc.exitCode}`);
      return client.health().then(
        (h) => h.ok,
        () => false,
      );
    },
    "planterd to answer",
    30_000,
  );
  return {
    home,
    socket,
    client,
    proc,
    async stop(signal = "SIGTERM") {
      proc.kill(signal);
      await proc.exited;
      daemons.delete(proc);
    },
  };
}

/**
 * SIGKILL every job's process group (not through the API: a slow planterd takes minutes to kill a
 * thousand), let planterd record the ends and remove their groups, stop it, remove its home.
 */
async function dispose(d: Planterd, jobs: Job[]): Promise<void> {
  for (const j of jobs) if (j.pid !== null) killQuietly(-j.pid);
  await waitFor(
    async () => (await d.client.listJobs({ state: "running", limit: 1 }).catch(() => ({ jobs: [] }))).jobs.length === 0,
    "planterd to record the jobs' ends",
    60_000,
  ).catch(() => undefined);
  await d.stop();
  cleanup(d.home);
  for (const j of jobs) if (j.pid !== null) jobGroups.delete(j.pid);
}

async function cpuPercent(pid: number, ms = MEASURE_MS): Promise<number> {
  const c0 = cpuMs(pid);
  const t0 = performance.now();
  await Bun.sleep(ms);
  return ((cpuMs(pid) - c0) / (performance.now() - t0)) * 100;
}

async function startJobs(d: Planterd, n: number, limits: Record<string, number> = LIMITS): Promise<Job[]> {
  const jobs: Job[] = [];
  for (let i = 0; i < n; i += 8) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(8, n - i) }, () => d.client.createJob({ argv: ["sleep", "900"], limits })),
    );
    for (const j of batch) if (j.pid !== null) jobGroups.add(j.pid);
    for (const j of batch) if (j.state !== "running") throw new Error(`job ${j.id} is ${j.state}: ${j.message}`);
    jobs.push(...batch);
  }
  return jobs;
}

const tickMs = async (d: Planterd) =>
  (JSON.parse(await get(d.socket, "/v1/ready")) as { limits: { last_tick_ms: number; enforcement: string } }).limits;

/** (a) and (c): planterd's CPU with `n` limited jobs running. */
async function jobsCost(v: Variant, n: number): Promise<{ cpu: number; tick: number; enforcement: string }> {
  const d = await planterd(v);
  let jobs: Job[] = [];
  try {
    jobs = await startJobs(d, n);
    await Bun.sleep(2000); // settle after the launches
    const cpu = await cpuPercent(d.proc.pid);
    const r = await tickMs(d);
    return { cpu, tick: r.last_tick_ms, enforcement: r.enforcement };
  } finally {
    await dispose(d, jobs);
  }
}

/** (b): SIGTERM through the API, `n` jobs one after another. */
async function killLatency(v: Variant, n: number): Promise<{ post: number[]; ended: number[] }> {
  const d = await planterd(v);
  const jobs: Job[] = [];
  const post: number[] = [];
  const ended: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const j = await d.client.createJob({ argv: ["sleep", "900"], limits: LIMITS });
      if (j.pid !== null) jobGroups.add(j.pid);
      jobs.push(j);
      await Bun.sleep(20); // the job has exec'd its program
      const t0 = performance.now();
      await d.client.killJob(j.id, {});
      post.push(performance.now() - t0);
      const w = await d.client.waitJob(j.id, 10_000);
      ended.push(performance.now() - t0);
      if (w.job.state !== "killed") throw new Error(`job ${j.id} ended ${w.job.state}/${w.job.reason}`);
    }
    return { post, ended };
  } finally {
    await dispose(d, jobs);
  }
}

/**
 * (d): `n` jobs (default limits), planterd's CPU with them, then SIGKILLed and started again: its
 * CPU with them adopted, and how soon an adopted job whose recorder is SIGKILLed from outside (no
 * status written, nothing inotify sees) is recorded ended.
 */
async function adoptedCost(v: Variant, n: number): Promise<{ launched: number; adopted: number; noticed: number[] }> {
  const first = await planterd(v);
  let jobs: Job[] = [];
  let d = first;
  try {
    jobs = await startJobs(first, n, {});
    await Bun.sleep(2000);
    const launched = await cpuPercent(first.proc.pid);
    await first.stop("SIGKILL");
    d = await planterd(v, first.home);
    await Bun.sleep(2000);
    const adopted = await cpuPercent(d.proc.pid);
    const noticed: number[] = [];
    for (const j of jobs.slice(0, 20)) {
      const t0 = performance.now();
      process.kill(j.pid as number, "SIGKILL");
      await d.client.waitJob(j.id, 10_000);
      noticed.push(performance.now() - t0);
    }
    return { launched, adopted, noticed };
  } finally {
    await dispose(d, jobs);
  }
}

export async function procsBench(): Promise<void> {
  header("11. Monitor and kill among many host processes (#13): one job, kills, 1000 jobs, 900 adopted");
  const base = process.env.PLANTER_BENCH_BASE;
  const variants: Variant[] = [
    { name: "cgroups (auto)", root: ROOT, cgroup: "auto" },
    { name: "cgroup = off", root: ROOT, cgroup: "off" },
    ...(base
      ? ([
          { name: "baseline, cgroups (auto)", root: base, cgroup: "auto" },
          { name: "baseline, cgroup = off", root: base, cgroup: "off" },
        ] as Variant[])
      : []),
  ];
  try {
    await addSleepers(Math.max(0, 3000 - hostProcs()));
    note(
      `host processes: ${hostProcs()} (${sleepers.length ? "idle sleepers started by this benchmark" : "none added"})`,
    );
    for (const v of variants) {
      const r = await jobsCost(v, 1);
      report(BENCH, `planterd CPU, 1 limited job, ${v.name}`, r.cpu, "% core", "le", 3, 2);
      note(`${v.name}: enforcement ${r.enforcement}; last tick ${r.tick} ms; host processes ${hostProcs()}`);
    }

    await addSleepers(Math.max(0, 4000 - hostProcs()));
    note(`host processes: ${hostProcs()}`);
    for (const v of variants) {
      const r = await killLatency(v, 30);
      report(BENCH, `kill (SIGTERM) POST latency p50, ${v.name}`, median(r.post), "ms", "le", 10, 2);
      note(`${v.name}: POST ${spread(r.post, 2)}; kill → end recorded ${spread(r.ended, 2)}`);
    }

    for (const v of variants) {
      const r = await jobsCost(v, MANY);
      report(BENCH, `planterd CPU, ${MANY} limited jobs, ${v.name}`, r.cpu, "% core", "le", 10, 2);
      note(`${v.name}: last tick ${r.tick} ms; host processes at the end ${hostProcs()}`);
    }

    for (const v of variants.filter((x) => x.cgroup === "auto")) {
      const r = await adoptedCost(v, ADOPTED);
      report(BENCH, `an adopted job's vanished recorder noticed, p50, ${v.name}`, median(r.noticed), "ms", "le", 50, 1);
      note(
        `${v.name}: ${ADOPTED} jobs, planterd CPU launched ${r.launched.toFixed(2)} % → adopted ${r.adopted.toFixed(2)} % ` +
          `of a core; vanished recorder noticed ${spread(r.noticed, 1)}`,
      );
    }
  } finally {
    killSleepers();
  }
}

if (import.meta.main) await procsBench();
