#!/usr/bin/env bun
/**
 * 10. A long history: 100k finished jobs written straight into a state dir through planter's own
 * state module (test/seed.ts: one `job.finished` event each, the newest 50 with their job dirs),
 * then the compiled `dist/planter` against it: `job ls` as people run it (the latest 50), with
 * `--limit 50` and with `--all`, and planterd's start-up until `GET /v1/ready` answers — after a
 * clean stop (cheap check at start, the full one in a process of its own after) and after a SIGKILL (full check
 * before serving). Runs alone (`bun bench/history.ts`) or as `historyBench()`.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { closedRecord } from "../lib/state/integrity.ts";
import { baseEnv, cleanup, tempHome } from "../test/harness.ts";
import { seedJobs } from "../test/seed.ts";
import { BENCH_CONFIG, BINARY, ensureBinary, header, median, note, report, spread } from "./common.ts";

const BENCH = "10 history";
const JOBS = 100_000;
const LS_RUNS = 20;
const ALL_RUNS = 3;
const STARTS = 15;

/** Wall times (ms) of `argv` run `runs` times after one untimed, checked run. */
async function timed(argv: string[], env: Record<string, string>, runs: number): Promise<number[]> {
  const check = Bun.spawnSync(argv, { env, stdout: "pipe", stderr: "pipe" });
  if (check.exitCode !== 0) throw new Error(`${argv.join(" ")} exited ${check.exitCode}: ${check.stderr}`);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const p = Bun.spawn(argv, { env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    if ((await p.exited) !== 0) throw new Error(`${argv.join(" ")} failed`);
    times.push(performance.now() - t0);
  }
  return times;
}

interface Ready {
  integrity?: { check: string; status: string; ms: number | null };
}

async function ready(socket: string): Promise<{ status: number; body: Ready } | null> {
  try {
    const r = await fetch("http://planterd/v1/ready", { unix: socket });
    return { status: r.status, body: (await r.json()) as Ready };
  } catch {
    return null;
  }
}

/** Start the compiled daemon; resolve with the ms until /v1/ready first answers 200. */
async function start(env: Record<string, string>, socket: string): Promise<{ proc: Subprocess; ms: number }> {
  const t0 = performance.now();
  const proc = Bun.spawn([BINARY, "daemon"], { env, stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  for (;;) {
    const r = await ready(socket);
    if (r?.status === 200) return { proc, ms: performance.now() - t0 };
    if (proc.exitCode !== null) throw new Error(`dist/planter daemon exited ${proc.exitCode}`);
    if (performance.now() - t0 > 20_000) throw new Error("dist/planter daemon did not become ready in 20 s");
    await Bun.sleep(0.5);
  }
}

/** Wait for the background full check (so the next start finds a clean-close record), then SIGTERM. */
async function stopClean(proc: Subprocess, socket: string): Promise<number | null> {
  let checkMs: number | null = null;
  for (let i = 0; i < 2000; i++) {
    const r = await ready(socket);
    if (r && r.body.integrity?.status !== "running") {
      checkMs = r.body.integrity?.check === "background" ? (r.body.integrity.ms ?? null) : null;
      break;
    }
    await Bun.sleep(5);
  }
  proc.kill("SIGTERM");
  await proc.exited;
  return checkMs;
}

export async function historyBench(): Promise<void> {
  header(`10. A history of ${JOBS / 1000}k finished jobs (compiled dist/planter)`);
  await ensureBinary();
  const home = tempHome("pb");
  try {
    const t0 = performance.now();
    seedJobs(join(home, "state"), JOBS);
    note(`state written through lib/state in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await Bun.write(join(home, "config.toml"), BENCH_CONFIG);
    const env = baseEnv(home);
    const socket = join(home, "run", "planterd.sock");

    // The first start has no clean-close record: it checks fully, as after a crash.
    let d = await start(env, socket);
    const ls = await timed([BINARY, "job", "ls"], env, LS_RUNS);
    const limit = await timed([BINARY, "job", "ls", "--limit", "50"], env, LS_RUNS);
    const all = await timed([BINARY, "job", "ls", "--all"], env, ALL_RUNS);
    const json = await timed([BINARY, "job", "ls", "--json"], env, ALL_RUNS);
    report(BENCH, `dist/planter job ls (latest 50 of ${JOBS / 1000}k)`, median(ls), "ms", "le", 50, 1);
    note(`job ls: ${spread(ls, 1)}`);
    report(BENCH, `dist/planter job ls --limit 50 (${JOBS / 1000}k)`, median(limit), "ms", "le", 50, 1);
    note(`--limit 50: ${spread(limit, 1)}`);
    note(`job ls --all (every job, 1000 a page): ${spread(all, 0)}; --json (every job): ${spread(json, 0)} — no goal`);
    await stopClean(d.proc, socket);

    // Clean stops and starts, then SIGKILLed ones, interleaved.
    const clean: number[] = [];
    const crashed: number[] = [];
    const checks: number[] = [];
    for (let i = 0; i < STARTS; i++) {
      if (!existsSync(closedRecord(join(home, "state", "planter.db")))) throw new Error("no clean-close record");
      d = await start(env, socket);
      clean.push(d.ms);
      d.proc.kill("SIGKILL");
      await d.proc.exited;
      d = await start(env, socket);
      crashed.push(d.ms);
      const c = await stopClean(d.proc, socket);
      // After a crash the check ran at start; the clean runs' background check time is measured below.
      if (c !== null) checks.push(c);
      d = await start(env, socket);
      clean.push(d.ms);
      const w = await stopClean(d.proc, socket);
      if (w !== null) checks.push(w);
    }
    report(BENCH, `planterd start-up to ready, ${JOBS / 1000}k jobs (clean stop)`, median(clean), "ms", "le", 100, 1);
    note(`after a clean stop: ${spread(clean, 1)}`);
    note(
      `after a SIGKILL (full quick_check before serving): ${spread(crashed, 1)}; ` +
        `the background full check after a clean start: ${spread(checks, 1)} — no goal`,
    );
  } finally {
    cleanup(home);
  }
}

if (import.meta.main) await historyBench();
