/**
 * 12. Logs at disk speed (#13). (a) `dist/planter logs JOB` of a 200 MB log against `cat` of the
 * same file, to /dev/null and through a pipe (`| cat >/dev/null`), interleaved, with planterd's
 * VmRSS before, at its peak during and after. (b) A job writing 1 GB as fast as it can while a
 * slow reader follows it (`planter logs -f` and `planter run`, each into a reader taking ~150 MB/s):
 * planterd's RSS must stay flat. (c) `dist/planter run -- true` with this CLI and with the CLI of
 * the last commit before the byte streams (JSON chunks, a run in four requests), built in .bench/
 * (`PLANTER_LOGS_BASELINE=<commit>` picks another, `=none` skips it), interleaved against one daemon.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../lib/api/contract.ts";
import { baseEnv } from "../test/harness.ts";
import {
  BENCH_CONFIG,
  type BenchDaemon,
  BINARY,
  cpuMs,
  header,
  median,
  note,
  procStatusKb,
  report,
  spread,
  withDaemon,
} from "./common.ts";
import { ensureFreshBinary } from "./fresh.ts";
import { baselineBinary } from "./hardening.ts";

const BENCH = "12 logs";
const LOG_BYTES = 200_000_000;
const FLOOD_BYTES = 1_000_000_000;
const ROUNDS = 7;
const RUNS = 40;
/** The last commit before the byte streams. */
const BASELINE_COMMIT = process.env.PLANTER_LOGS_BASELINE ?? "ec567d7";
let BASELINE: string | null = null;

const rssMb = (pid: number) => procStatusKb(pid, "VmRSS") / 1024;

/** Run `bash -c cmd` with the daemon's env; wall ms, and planterd's peak RSS (MB) meanwhile. */
async function timed(d: BenchDaemon, cmd: string): Promise<{ ms: number; peak: number }> {
  let peak = rssMb(d.pid);
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssMb(d.pid));
  }, 2);
  const t0 = performance.now();
  const p = Bun.spawn(["bash", "-c", cmd], { env: baseEnv(d.home), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  const ms = performance.now() - t0;
  clearInterval(sampler);
  if (code !== 0) throw new Error(`\`${cmd}\` exited ${code}: ${err.slice(0, 500)}`);
  return { ms, peak: Math.max(peak, rssMb(d.pid)) };
}

async function finishedJob(d: BenchDaemon, argv: string[]): Promise<Job> {
  const job = await d.client.createJob({ argv });
  for (;;) {
    const r = await d.client.waitJob(job.id, 60_000);
    if (!r.timed_out) {
      if (r.job.state !== "exited")
        throw new Error(`${argv.join(" ")}: ${r.job.state} ${r.job.reason} ${r.job.message}`);
      return r.job;
    }
  }
}

/** (a) planter logs of a 200 MB log vs cat. */
async function bigLog(d: BenchDaemon): Promise<void> {
  const job = await finishedJob(d, [
    "sh",
    "-c",
    `yes 'planter log line: 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ' | head -c ${LOG_BYTES}`,
  ]);
  const file = join(d.home, "state", "jobs", job.id, "stdout");
  // The same bytes, whole: a hash of the CLI's output against one of the file (outside the timing).
  const p = Bun.spawn([BINARY, "logs", job.id], { env: baseEnv(d.home), stdout: "pipe", stderr: "inherit" });
  const hasher = new Bun.CryptoHasher("sha256");
  let got = 0;
  for await (const c of p.stdout) {
    hasher.update(c);
    got += c.length;
  }
  await p.exited;
  const want = new Bun.CryptoHasher("sha256").update(readFileSync(file)).digest("hex");
  if (got !== LOG_BYTES || hasher.digest("hex") !== want)
    throw new Error(`planter logs gave ${got} bytes, not the log`);

  const q = (s: string) => `'${s}'`;
  const variants: Record<string, string> = {
    "cat > /dev/null": `cat ${q(file)} >/dev/null`,
    "planter logs > /dev/null": `${q(BINARY)} logs ${job.id} >/dev/null`,
    "cat | cat": `cat ${q(file)} | cat >/dev/null`,
    "planter logs | cat": `${q(BINARY)} logs ${job.id} | cat >/dev/null`,
  };
  if (BASELINE) {
    variants["baseline logs > /dev/null"] = `${q(BASELINE)} logs ${job.id} >/dev/null`;
    variants["baseline logs | cat"] = `${q(BASELINE)} logs ${job.id} | cat >/dev/null`;
  }
  const names = Object.keys(variants);
  const times: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const peaks: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  await timed(d, `cat ${q(file)} >/dev/null`); // the page cache holds the log from here on
  // planterd's memory with this CLI alone first (the baseline's JSON chunks leave a larger heap behind).
  const before = rssMb(d.pid);
  let peak = before;
  for (let i = 0; i < 3; i++)
    peak = Math.max(peak, (await timed(d, variants["planter logs > /dev/null"] as string)).peak);
  await Bun.sleep(200);
  const after = rssMb(d.pid);
  const cpu0 = cpuMs(d.pid);
  for (let i = 0; i < ROUNDS; i++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(i + k) % names.length] as string;
      const r = await timed(d, variants[name] as string);
      times[name]?.push(r.ms);
      peaks[name]?.push(r.peak);
    }
  }
  const cpu = cpuMs(d.pid) - cpu0;
  const m = (n: string) => median(times[n] ?? []);
  report(BENCH, "logs 200 MB > /dev/null ÷ cat", m("planter logs > /dev/null") / m("cat > /dev/null"), "×", "le", 3);
  report(BENCH, "logs 200 MB | cat ÷ cat | cat", m("planter logs | cat") / m("cat | cat"), "×", "le", 3);
  report(BENCH, "planterd RSS growth while streaming 200 MB", peak - before, "MB", "le", 16, 1);
  for (const n of names) note(`${n.padEnd(26)} ${spread(times[n] ?? [], 1)}`);
  note(
    `planterd VmRSS (this CLI alone, 3 runs): ${before.toFixed(1)} MB before, ${peak.toFixed(1)} MB at its peak, ${after.toFixed(1)} MB after` +
      (BASELINE
        ? `; at its peak during the interleaved rounds: this CLI's ${Math.max(...(peaks["planter logs > /dev/null"] ?? [])).toFixed(1)} MB, the baseline's ${Math.max(...(peaks["baseline logs > /dev/null"] ?? [])).toFixed(1)} MB`
        : ""),
  );
  note(
    `planterd CPU over the ${ROUNDS} rounds: ${cpu.toFixed(0)} ms; output checked whole (sha256) once; ` +
      (BASELINE ? `baseline CLI ${BASELINE}` : "no baseline CLI (PLANTER_LOGS_BASELINE=none)"),
  );
}

/**
 * (b) A 1 GB flood followed by a reader that takes its time: the CLI's stdout is read here at
 * about `mbs` MB/s. Returns the bytes read, how long, and planterd's RSS before and at its peak.
 */
async function flood(d: BenchDaemon, argv: string[], mbs: number) {
  const before = rssMb(d.pid);
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssMb(d.pid));
  }, 5);
  const t0 = performance.now();
  const p = Bun.spawn(argv, { env: baseEnv(d.home), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let got = 0;
  for await (const c of p.stdout) {
    got += c.length;
    const due = t0 + got / (mbs * 1000); // ms at which `got` bytes are due at `mbs` MB/s
    const ahead = due - performance.now();
    if (ahead > 1) await Bun.sleep(ahead);
  }
  const code = await p.exited;
  clearInterval(sampler);
  if (code !== 0) throw new Error(`${argv.join(" ")} exited ${code}: ${await new Response(p.stderr).text()}`);
  return { got, ms: performance.now() - t0, before, peak };
}

async function slowReaders(d: BenchDaemon): Promise<void> {
  const writer = ["sh", "-c", `head -c ${FLOOD_BYTES} /dev/zero`];
  const job = await d.client.createJob({ argv: writer });
  const follow = await flood(d, [BINARY, "logs", "-f", job.id], 150);
  const wrote = await d.client.waitJob(job.id, 1000);
  const run = await flood(d, [BINARY, "run", "--", ...writer], 150);
  // The same with the baseline CLI (JSON chunks), for scale.
  const old = BASELINE ? await flood(d, [BASELINE, "run", "--", ...writer], 150) : null;
  for (const [what, r] of [
    ["logs -f", follow],
    ["run", run],
  ] as const) {
    if (r.got !== FLOOD_BYTES) throw new Error(`${what}: read ${r.got} bytes of ${FLOOD_BYTES}`);
  }
  report(
    BENCH,
    "planterd RSS growth, 1 GB flood, slow reader",
    Math.max(follow.peak - follow.before, run.peak - run.before),
    "MB",
    "le",
    16,
    1,
  );
  note(
    `logs -f: ${(follow.ms / 1000).toFixed(1)} s for 1 GB at the reader's pace (the job had ${wrote.timed_out ? "not " : ""}ended when it was read), ` +
      `planterd ${follow.before.toFixed(1)} → peak ${follow.peak.toFixed(1)} MB; run: ${(run.ms / 1000).toFixed(1)} s, ` +
      `planterd ${run.before.toFixed(1)} → peak ${run.peak.toFixed(1)} MB` +
      (old
        ? `; the baseline CLI's run: ${(old.ms / 1000).toFixed(1)} s, planterd ${old.before.toFixed(1)} → peak ${old.peak.toFixed(1)} MB`
        : ""),
  );
  await d.client.removeJob(job.id);
}

/** (c) planter run -- true, this CLI and the baseline's, interleaved. */
async function runTrue(d: BenchDaemon, mode: string): Promise<void> {
  const env = baseEnv(d.home);
  const clis: Record<string, string> = { "this CLI": BINARY };
  if (BASELINE) clis.baseline = BASELINE;
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(clis).map((n) => [n, []]));
  const names = Object.keys(clis);
  for (let i = 0; i < RUNS + 3; i++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(i + k) % names.length] as string;
      const t0 = performance.now();
      const p = Bun.spawn([clis[name] as string, "run", "--", "true"], { env, stdout: "ignore", stderr: "pipe" });
      const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
      if (code !== 0) throw new Error(`${name}: planter run -- true exited ${code}: ${err}`);
      if (i >= 3) times[name]?.push(performance.now() - t0);
    }
  }
  const last = (await d.client.listJobs({ limit: 1000 })).jobs.at(-1);
  if (BASELINE)
    report(
      BENCH,
      `run -- true (${mode}), this CLI ÷ baseline`,
      median(times["this CLI"] ?? []) / median(times.baseline ?? []),
      "×",
      "le",
      1,
      2,
    );
  for (const n of names) note(`run -- true, ${n.padEnd(8)} ${spread(times[n] ?? [], 2)}`);
  note(`daemon: dist/planter daemon, ${mode}; the last job ran on ${last?.sandbox.backend ?? "?"}`);
}

export async function logsBench(): Promise<void> {
  await ensureFreshBinary();
  if (BASELINE_COMMIT !== "none") BASELINE = await baselineBinary(BASELINE_COMMIT);
  header(`12a. planter logs of a ${LOG_BYTES / 1e6} MB log vs cat, ${ROUNDS} interleaved rounds`);
  await withDaemon("compiled", bigLog);
  header("12b. A 1 GB flood followed by a reader taking 150 MB/s: planter logs -f, then planter run");
  await withDaemon("compiled", slowReaders);
  header(`12c. dist/planter run -- true, ${RUNS} interleaved runs${BASELINE ? " with the baseline CLI" : ""}`);
  // Unsandboxed, the client's round trips are most of what there is; enforced is the goal's case.
  await withDaemon("compiled", (d) => runTrue(d, "disabled"), BENCH_CONFIG);
  if (Bun.which("bwrap"))
    await withDaemon("compiled", (d) => runTrue(d, "enforced (bwrap)"), '[sandbox]\nmode = "enforced"\n');
  else note("no bwrap here: run -- true enforced not measured");
}

if (import.meta.main) await logsBench();
