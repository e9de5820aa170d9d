/**
 * 8. Limits (#4): what the monitor costs the daemon with 200 running jobs sampled every 250 ms,
 * how long from a breach until the job's whole tree is dead, and how far a log flood overshoots
 * its quota before it is stopped (the stored log is then cut to the quota exactly).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { EventRecord, Job } from "../lib/api/contract.ts";
import { descendants, procTable } from "../lib/jobs/proc.ts";
import { waitFor } from "../test/harness.ts";
import {
  BENCH_CONFIG,
  type BenchDaemon,
  cpuMs,
  get,
  header,
  note,
  percentile,
  report,
  spread,
  withDaemon,
} from "./common.ts";

const BENCH = "8 limits";
const JOBS = 200;
const INTERVAL_MS = 250;
const GRACE_MS = 500;
const MEASURE_MS = 10_000;
const MiB = 1024 * 1024;

const config = (extra = "") =>
  `${BENCH_CONFIG}[monitor]\ninterval_ms = ${INTERVAL_MS}\ngrace_ms = ${GRACE_MS}\n${extra}`;

interface Ready {
  limits: { enforcement: string; ticks: number; last_tick_ms: number; jobs_sampled: number };
}
const ready = async (d: BenchDaemon) => JSON.parse(await get(d.socket, "/v1/ready")) as Ready;

/** Daemon CPU over `ms` as % of one core, from utime+stime. */
async function cpuPercent(pid: number, ms: number): Promise<number> {
  const c0 = cpuMs(pid);
  const t0 = performance.now();
  await Bun.sleep(ms);
  return ((cpuMs(pid) - c0) / (performance.now() - t0)) * 100;
}

/** 200 `sleep 300` jobs, with or without limits; the daemon's CPU over 10 s once they run. */
async function monitorCost(withLimits: boolean): Promise<{ cpu: number; tickMs: number[]; ticks: number }> {
  return withDaemon(
    "source",
    async (d) => {
      const limits = withLimits ? { timeout_ms: 3_600_000, max_rss_bytes: 1024 * MiB, max_log_bytes: 1024 * MiB } : {};
      for (let i = 0; i < JOBS; i++) {
        const j = await d.client.createJob({ argv: ["sleep", "300"], limits });
        if (j.state !== "running") throw new Error(`job ${j.id} is ${j.state}: ${j.message}`);
      }
      await Bun.sleep(2000); // settle after the burst of launches
      const before = await ready(d);
      const tickMs: number[] = [];
      const sampler = setInterval(async () => {
        const r = await ready(d).catch(() => null);
        if (r) tickMs.push(r.limits.last_tick_ms);
      }, 500);
      const cpu = await cpuPercent(d.pid, MEASURE_MS);
      clearInterval(sampler);
      const after = await ready(d);
      if (withLimits && after.limits.jobs_sampled !== JOBS) {
        throw new Error(`monitor samples ${after.limits.jobs_sampled} jobs, not ${JOBS}`);
      }
      return { cpu, tickMs, ticks: after.limits.ticks - before.limits.ticks };
    },
    config(),
  );
}

/**
 * Start `n` jobs; for each, poll its tree from the outside every 2 ms and note when the last
 * process is gone. `breachAt` says when each job crossed its limit.
 */
async function breachToDead(
  d: BenchDaemon,
  n: number,
  make: (i: number) => { argv: string[]; limits: Record<string, number> },
  breachAt: (job: Job, i: number) => number | null,
): Promise<{ ms: number[]; reasons: string[] }> {
  const jobs: Job[] = [];
  for (let i = 0; i < n; i++) jobs.push(await d.client.createJob(make(i)));
  // Every process ever seen in each tree (recorder included), by pid and start time.
  const seen = jobs.map(() => new Map<number, string>());
  const deadAt: (number | null)[] = jobs.map(() => null);
  await waitFor(
    () => {
      const t = procTable(); // one scan per poll for all jobs
      const now = Date.now();
      jobs.forEach((j, i) => {
        if (deadAt[i] !== null) return;
        const pid = j.pid as number;
        for (const p of [pid, ...descendants(t, [pid], pid)]) {
          const start = t.procs.get(p)?.startTime;
          if (start !== undefined && !seen[i]?.has(p)) seen[i]?.set(p, start);
        }
        const alive = [...(seen[i] ?? [])].some(([p, start]) => t.procs.get(p)?.startTime === start);
        if (!alive) deadAt[i] = now;
      });
      return deadAt.every((x) => x !== null);
    },
    "every tree to die",
    30_000,
  );
  const ended = await Promise.all(jobs.map((j) => d.client.waitJob(j.id, 10_000)));
  const ms: number[] = [];
  ended.forEach((w, i) => {
    const at = breachAt(w.job, i);
    if (at !== null) ms.push((deadAt[i] as number) - at);
  });
  return { ms, reasons: [...new Set(ended.map((w) => `${w.job.state}/${w.job.reason}/${w.job.signal}`))] };
}

async function breachLatency(): Promise<void> {
  await withDaemon(
    "source",
    async (d) => {
      const goal = 2 * INTERVAL_MS + GRACE_MS;
      // Timeouts: the breach is at started_at + timeout_ms exactly. Deadlines spread over an interval.
      const plain = await breachToDead(
        d,
        40,
        (i) => ({
          argv: ["sh", "-c", "sleep 300 & sleep 300 & wait"],
          limits: { timeout_ms: 300 + ((i * 37) % INTERVAL_MS) },
        }),
        (j) => Date.parse(j.started_at as string) + (j.limits.timeout_ms as number),
      );
      report(BENCH, "timeout → tree dead, p95 (dies on SIGTERM)", percentile(plain.ms, 95), "ms", "le", goal, 1);
      note(`dies on SIGTERM: ${spread(plain.ms, 1)}; ended ${plain.reasons.join(", ")}`);

      const stubborn = await breachToDead(
        d,
        20,
        (i) => ({
          argv: ["sh", "-c", "trap '' TERM; sleep 300 & while :; do sleep 1; done"],
          limits: { timeout_ms: 300 + ((i * 37) % INTERVAL_MS) },
        }),
        (j) => Date.parse(j.started_at as string) + (j.limits.timeout_ms as number),
      );
      report(
        BENCH,
        `timeout → tree dead, p95 (ignores SIGTERM; grace ${GRACE_MS} ms)`,
        percentile(stubborn.ms, 95),
        "ms",
        "le",
        goal,
        1,
      );
      note(`ignores SIGTERM: ${spread(stubborn.ms, 1)}; ended ${stubborn.reasons.join(", ")}`);

      // Memory: a child allocates 4 MiB steps and stamps the moment its own RSS passes the limit.
      const stamps = join(d.home, "stamps");
      const limit = 96 * MiB;
      const grower = (i: number) =>
        `${process.execPath} -e "const a=[];for(;;){const b=Buffer.alloc(4*2**20,1);a.push(b);` +
        `const kb=Number(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1]);` +
        `if(kb*1024>${limit}){require('fs').writeFileSync('${stamps}.${i}',String(Date.now()));break}` +
        `Bun.sleepSync(5)}globalThis.keep=a;setInterval(()=>{},1e6)"`;
      const mem = await breachToDead(
        d,
        10,
        (i) => ({ argv: ["sh", "-c", `${grower(i)} & wait`], limits: { max_rss_bytes: limit } }),
        (_j, i) => (existsSync(`${stamps}.${i}`) ? Number(readFileSync(`${stamps}.${i}`, "utf8")) : null),
      );
      report(BENCH, "memory → tree dead, p95", percentile(mem.ms, 95), "ms", "le", goal, 1);
      note(
        `memory (the child's own RSS passed ${limit / MiB} MiB): ${spread(mem.ms, 1)}; ended ${mem.reasons.join(", ")}`,
      );
    },
    config(),
  );
}

/** `yes` against a 1 MiB quota: bytes written past it when found, and when the tree was dead. */
async function logOvershoot(watch: boolean): Promise<{ found: number[]; written: number[]; exact: boolean }> {
  return withDaemon(
    "source",
    async (d) => {
      const max = MiB;
      const found: number[] = [];
      const written: number[] = [];
      let exact = true;
      for (let i = 0; i < 15; i++) {
        const j = await d.client.createJob({ argv: ["yes", "flood"], limits: { max_log_bytes: max } });
        const f = (await d.client.waitJob(j.id, 10_000)).job;
        if (f.reason !== "log_quota") throw new Error(`flood ended ${f.state}/${f.reason}`);
        found.push(((f.limit_exceeded?.value as number) - max) / MiB);
        const ev: EventRecord[] = [];
        for await (const e of d.client.events({ limit: 1000 })) if (e.subject === `job/${j.id}`) ev.push(e);
        const cut = ev.find((e) => e.kind === "job.log_truncated")?.data as
          | { written: { stdout: number; stderr: number }; kept: { stdout: number; stderr: number } }
          | undefined;
        if (cut) written.push((cut.written.stdout + cut.written.stderr - max) / MiB);
        const stored = (await d.client.logs(j.id, { max_bytes: 0 })).size;
        if (stored !== max) exact = false;
      }
      return { found, written, exact };
    },
    config(watch ? "" : "log_watch = false\n"),
  );
}

export async function limitsBench(): Promise<void> {
  header(`8. Limits (#4): monitor cost with ${JOBS} jobs every ${INTERVAL_MS} ms, breach → tree dead, log overshoot`);
  const idle = await monitorCost(false);
  const busy = await monitorCost(true);
  report(BENCH, `daemon CPU, ${JOBS} jobs with limits, sampled`, busy.cpu, "% core", "le", 5, 2);
  note(
    `control, ${JOBS} jobs without limits (no sampling): ${idle.cpu.toFixed(2)} % of a core; ` +
      `monitor's share ≈ ${(busy.cpu - idle.cpu).toFixed(2)} %`,
  );
  note(
    `${busy.ticks} ticks in ${MEASURE_MS / 1000} s; one tick (each job's processes and counters): ` +
      `${spread(busy.tickMs, 2)}`,
  );
  await breachLatency();
  const watched = await logOvershoot(true);
  const polled = await logOvershoot(false);
  note(
    `with inotify: found at +${spread(watched.found, 1).replace(/ ms/, " MiB")}; written by the time the tree died ` +
      `+${spread(watched.written, 1).replace(/ ms/, " MiB")}; stored log exactly 1 MiB: ${watched.exact ? "yes" : "NO"}`,
  );
  note(
    `ticks only (log_watch = false): found at +${spread(polled.found, 1).replace(/ ms/, " MiB")}; written ` +
      `+${spread(polled.written, 1).replace(/ ms/, " MiB")}; stored exactly 1 MiB: ${polled.exact ? "yes" : "NO"}`,
  );
}
