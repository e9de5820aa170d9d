/**
 * Shared pieces of the benchmarks: a real planterd per benchmark in a fresh short temp dir
 * (from source through test/harness.ts, or the compiled dist/planter), statistics, and the
 * goal lines every benchmark prints.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../lib/api/client.ts";
import type { Job, JobState } from "../lib/api/contract.ts";
import { baseEnv, cleanup, ROOT, startDaemon, tempHome, waitFor } from "../test/harness.ts";

export const BINARY = join(ROOT, "dist", "planter");

// ---------------------------------------------------------------- statistics

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

export const median = (samples: readonly number[]) => percentile(samples, 50);

/** "p50 x / p90 y / p99 z / max w" in ms. */
export function spread(samples: readonly number[], digits = 3): string {
  const f = (p: number) => percentile(samples, p).toFixed(digits);
  const max = samples.length ? Math.max(...samples).toFixed(digits) : "NaN";
  return `p50 ${f(50)} / p90 ${f(90)} / p99 ${f(99)} / max ${max} ms (n=${samples.length})`;
}

// ---------------------------------------------------------------- goals

export interface Figure {
  bench: string;
  name: string;
  value: number;
  unit: string;
  /** "le": the value must be at most the goal; "ge": at least. */
  cmp: "le" | "ge";
  goal: number;
  met: boolean;
  digits: number;
}

export const figures: Figure[] = [];

const fmt = (n: number, digits: number) => (Number.isFinite(n) ? n.toFixed(digits) : String(n));

/** Record and print one figure beside its goal. */
export function report(
  bench: string,
  name: string,
  value: number,
  unit: string,
  cmp: "le" | "ge",
  goal: number,
  digits = 2,
): Figure {
  const met = Number.isFinite(value) && (cmp === "le" ? value <= goal : value >= goal);
  const f: Figure = { bench, name, value, unit, cmp, goal, met, digits };
  figures.push(f);
  const left = `  ${name}`.padEnd(52);
  const val = `${fmt(value, digits)} ${unit}`.padEnd(16);
  const g = `goal ${cmp === "le" ? "≤" : "≥"} ${goal} ${unit}`.padEnd(24);
  console.log(`${left}${val}${g}${met ? "MET" : "NOT MET"}`);
  return f;
}

/** An informational line (no goal). */
export function note(text: string): void {
  console.log(`    · ${text}`);
}

export function header(title: string): void {
  console.log(`\n== ${title}`);
}

/** The figures as a markdown table (for plans/benchmarks.md). */
export function summaryTable(): string {
  const rows = figures.map(
    (f) =>
      `| ${f.bench} | ${f.name} | ${fmt(f.value, f.digits)} ${f.unit} | ${f.cmp === "le" ? "≤" : "≥"} ${f.goal} ${f.unit} | ${f.met ? "met" : "**not met**"} |`,
  );
  return ["| bench | figure | value | goal | |", "|---|---|---|---|---|", ...rows].join("\n");
}

// ---------------------------------------------------------------- time bounds

/** Reject with `what` when `p` takes longer than `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: gave up after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------- daemons

export type DaemonKind = "source" | "compiled";

export interface BenchDaemon {
  kind: DaemonKind;
  home: string;
  socket: string;
  client: Client;
  proc: Subprocess;
  pid: number;
  /** Kill the jobs still running, stop the daemon, remove the temp dir. Idempotent. */
  dispose(): Promise<void>;
}

const live = new Set<BenchDaemon>();

/** Every benchmark daemon runs jobs unsandboxed: the figures are of planter's own overhead. */
export const BENCH_CONFIG = '[sandbox]\nmode = "disabled"\n';

/** Start planterd in a fresh /tmp dir: `bun scripts/planter.ts daemon` or `dist/planter daemon`. */
export async function daemon(kind: DaemonKind = "source", config = BENCH_CONFIG): Promise<BenchDaemon> {
  const home = tempHome("pb");
  let proc: Subprocess;
  let socket: string;
  let client: Client;
  try {
    if (kind === "source") {
      const h = await startDaemon({ home, config });
      proc = h.proc;
      socket = h.socket;
      client = h.client;
    } else {
      socket = join(home, "run", "planterd.sock");
      client = new Client(socket);
      await Bun.write(join(home, "config.toml"), config);
      const p = Bun.spawn([BINARY, "daemon"], {
        env: baseEnv(home),
        stdin: "ignore",
        stdout: "ignore",
        stderr: "pipe",
      });
      proc = p;
      let err = "";
      void (async () => {
        for await (const chunk of p.stderr) err += new TextDecoder().decode(chunk);
      })();
      await waitFor(
        async () => {
          if (p.exitCode !== null) throw new Error(`dist/planter daemon exited ${p.exitCode}: ${err}`);
          return client.health().then(
            (h) => h.ok,
            () => false,
          );
        },
        "dist/planter daemon to answer",
        20_000,
      );
    }
  } catch (e) {
    cleanup(home);
    throw e;
  }
  let disposed: Promise<void> | null = null;
  const d: BenchDaemon = {
    kind,
    home,
    socket,
    client,
    proc,
    pid: proc.pid,
    dispose() {
      disposed ??= (async () => {
        live.delete(d);
        await killAllJobs(d).catch(() => undefined);
        proc.kill("SIGTERM");
        const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
        if (!exited) {
          proc.kill("SIGKILL");
          await proc.exited;
        }
        cleanup(home);
      })();
      return disposed;
    },
  };
  live.add(d);
  return d;
}

/** Run `fn` with a fresh daemon and always dispose of it. */
export async function withDaemon<T>(
  kind: DaemonKind,
  fn: (d: BenchDaemon) => Promise<T>,
  config = BENCH_CONFIG,
): Promise<T> {
  const d = await daemon(kind, config);
  try {
    return await fn(d);
  } finally {
    await d.dispose();
  }
}

/** Every job of a daemon, all pages. */
export async function allJobs(client: Client, state?: JobState): Promise<Job[]> {
  const out: Job[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await client.listJobs({ state, limit: 1000, after });
    out.push(...page.jobs);
    if (!page.next_after) return out;
    after = page.next_after;
  }
}

/**
 * Force-kill every running job through the API and wait for them to end; as a last resort
 * SIGKILL their process groups directly (jobs outlive planterd by design).
 */
export async function killAllJobs(d: BenchDaemon): Promise<void> {
  const running = [...(await allJobs(d.client, "running")), ...(await allJobs(d.client, "pending"))];
  await Promise.all(running.map((j) => d.client.killJob(j.id, { force: true }).catch(() => undefined)));
  await Promise.all(running.map((j) => d.client.waitJob(j.id, 5000).catch(() => undefined)));
  for (const j of running) {
    if (j.pid === null) continue;
    try {
      process.kill(-j.pid, "SIGKILL");
    } catch {
      // gone, as it should be
    }
  }
}

/** Dispose of every daemon still running (on error or Ctrl-C). */
export async function disposeAll(): Promise<void> {
  await Promise.all([...live].map((d) => d.dispose().catch(() => undefined)));
}

// ---------------------------------------------------------------- processes

/** A /proc/<pid>/status field in kB (VmRSS, VmHWM, …), or NaN. */
export function procStatusKb(pid: number, field: string): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** utime+stime of a process in ms (clock ticks assumed 100/s, as on every Linux build we ship). */
export function cpuMs(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return Number.NaN;
  }
}

/** Open file descriptors of a process that are sockets. */
export function socketFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:");
      } catch {
        return false;
      }
    }).length;
  } catch {
    return Number.NaN;
  }
}

/** Newest modification time (ms) of the files under `dir`. */
function newestMtime(dir: string): number {
  let newest = 0;
  try {
    for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
      if (e.isFile()) newest = Math.max(newest, statSync(join(e.parentPath, e.name)).mtimeMs);
    }
  } catch {
    // missing dir: nothing newer
  }
  return newest;
}

let staleWarned = false;

/** Build dist/planter with `make build` when it is missing; warn when it is older than the sources. */
export async function ensureBinary(): Promise<void> {
  if (existsSync(BINARY)) {
    const built = statSync(BINARY).mtimeMs;
    const sources = Math.max(
      newestMtime(join(ROOT, "lib")),
      newestMtime(join(ROOT, "scripts")),
      statSync(join(ROOT, "package.json")).mtimeMs,
    );
    if (sources > built && !staleWarned) {
      staleWarned = true;
      note(
        `WARNING: dist/planter (built ${new Date(built).toISOString()}) is older than the sources ` +
          `(changed ${new Date(sources).toISOString()}); its figures are for the older build — run make build`,
      );
    }
    return;
  }
  console.log("  dist/planter missing: running make build …");
  const p = Bun.spawn(["make", "build"], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`make build failed (${code}): ${err.slice(-2000)}`);
}

/** Raw GET over the socket with Bun's fetch (keep-alive); returns the body text. */
export async function get(socket: string, path: string): Promise<string> {
  const res = await fetch(`http://planterd${path}`, { unix: socket });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET ${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
  return text;
}
