/**
 * 16. Where a sandboxed job's launch goes (#13 goals 2 and 6), each part against its alternatives,
 * interleaved in one run (`bun bench/run.ts launch`, root with bubblewrap):
 * (a) the process chain without planterd — bare bwrap (the goals' baseline), bwrap with planter's
 *     view as the job's user, the recorder without and with its log pumps (today's chain), the uid
 *     drop alone (setpriv against coreutils' chroot --userspec), and a pre-made ("warm") sandbox
 *     that waits inside for its command, timed from the command to the recorder's end;
 * (b) the state disk's metadata operations a launch makes (mkdir, a create, two FIFOs, an input
 *     through a file against a memfd), beside the same on tmpfs;
 * (c) cgroup v1 groups: made, entered by a process, removed (the move's cost depends on the boot:
 *     see plans/benchmarks.md);
 * (d) `planter run -- true` end to end, this tree's binary against a baseline commit's
 *     (`PLANTER_LAUNCH_BASE`, default dd5c72f), firejail and bare bwrap; and 1000 jobs from 4
 *     clients through both binaries against `xargs -P4` bare bwrap (`PLANTER_THROUGHPUT_JOBS`).
 * Wall times are p50 of interleaved runs; CPU is what the spawned tree used (rusage of the waited
 * child, so bwrap's init, reparented before it exits, is not in it).
 */
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../lib/api/client.ts";
import { jobFiles, makePipes, prepareStatus, recorderArgv } from "../lib/jobs/recorder.ts";
import type { PipeEnds } from "../lib/sandbox/backend.ts";
import { bwrapPlan } from "../lib/sandbox/bwrap.ts";
import { HOST_ENV } from "../lib/sandbox/env.ts";
import { dropArgv, type Identity } from "../lib/sandbox/identity.ts";
import { openInputs } from "../lib/sandbox/inputs.ts";
import { complete } from "../lib/sandbox/policy.ts";
import { seccompProgram } from "../lib/sandbox/seccomp.ts";
import { ROOT, tempHome, waitFor } from "../test/harness.ts";
import { BINARY, header, median, note, report } from "./common.ts";
import { ensureFreshBinary } from "./fresh.ts";

const BENCH = "16 launch";
const BASE = process.env.PLANTER_LAUNCH_BASE ?? "dd5c72f";
const CHAIN_RUNS = 40;
const E2E_RUNS = 30;
const JOBS = Number(process.env.PLANTER_THROUGHPUT_JOBS ?? 1000);
const NOBODY: Identity = { uid: 65534, gid: 65534, groups: [], user: "nobody", home: null };
const BARE = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"];

interface Sample {
  wall: number[];
  cpu: number[];
}
const sample = (): Sample => ({ wall: [], cpu: [] });
const cpuOf = (p: Subprocess) => {
  const u = p.resourceUsage();
  return u ? Number(u.cpuTime.user + u.cpuTime.system) / 1000 : Number.NaN;
};
const line = (name: string, s: Sample) =>
  note(`${name.padEnd(44)} wall p50 ${median(s.wall).toFixed(2)} ms   CPU p50 ${median(s.cpu).toFixed(2)} ms`);

/** Interleave `steps` `runs` times (order rotated each round) after one warm-up each. */
async function interleave(steps: [string, () => Promise<[number, number]>][], runs: number) {
  const out = new Map(steps.map(([n]) => [n, sample()]));
  for (const [, f] of steps) await f();
  for (let i = 0; i < runs; i++) {
    for (let k = 0; k < steps.length; k++) {
      const [name, f] = steps[(i + k) % steps.length] as [string, () => Promise<[number, number]>];
      const [w, c] = await f();
      out.get(name)?.wall.push(w);
      out.get(name)?.cpu.push(c);
    }
  }
  return out;
}

async function timed(argv: string[], opts: { fds?: number[]; out?: number; err?: number } = {}) {
  const t0 = performance.now();
  const p = Bun.spawn(argv, {
    cwd: "/",
    env: HOST_ENV,
    stdio: ["ignore", opts.out ?? "ignore", opts.err ?? "ignore", ...(opts.fds ?? [])],
    detached: true,
  });
  const code = await p.exited;
  const wall = performance.now() - t0;
  if (code !== 0) throw new Error(`${argv.slice(0, 3).join(" ")} … exited ${code}`);
  return [wall, cpuOf(p)] as [number, number];
}

/** A state-dir-like tree the job user can reach, with planter's view rendered for it. */
function viewFixture() {
  const base = mkdtempSync("/tmp/pl-launch-");
  chmodSync(base, 0o711);
  const state = join(base, "state");
  const cell = join(state, "cells", "default");
  const home = join(state, "homes", "default");
  const jobs = join(state, "jobs");
  for (const d of [cell, home, jobs, join(base, "run")]) mkdirSync(d, { recursive: true, mode: 0o700 });
  for (const d of [state, join(state, "cells"), join(state, "homes")]) chmodSync(d, 0o711);
  chownSync(cell, NOBODY.uid, NOBODY.gid);
  chownSync(home, NOBODY.uid, NOBODY.gid);
  const plan = bwrapPlan(
    {
      argv: ["/bin/true"],
      env: { PATH: "/usr/bin:/bin", HOME: home, LANG: "C.UTF-8" },
      cwd: cell,
      cellDir: cell,
      policy: complete(undefined),
      protect: [state, join(base, "run")],
      home,
      hiddenHomes: ["/root"],
      credentialHomes: ["/root"],
      otherCells: [],
      workspaceReadOnly: [],
      tmpBytes: 1 << 30,
      jobDir: "/nonexistent",
      scratch: "/nonexistent",
      identity: NOBODY,
    },
    "/usr/bin/bwrap",
    undefined,
    { seccomp: seccompProgram({ allowUnixSockets: false }) },
  );
  let n = 0;
  return {
    base,
    plan,
    /** A fresh job dir with its logs open and the plan's inputs: what the supervisor prepares. */
    job() {
      const dir = join(jobs, `j${++n}`);
      mkdirSync(dir, { mode: 0o700 });
      const f = jobFiles(dir);
      const out = openSync(f.stdout, "a", 0o600);
      const err = openSync(f.stderr, "a", 0o600);
      prepareStatus(f.status);
      // The gate let go at once (its byte waits in the pipe): (a) times the chain; planterd's gate
      // (the mount comparison) is in (d)'s end-to-end figures.
      const ends: PipeEnds = {};
      const fds = openInputs(plan.inputs, dir, NOBODY, ends);
      if (ends.block !== undefined) writeSync(ends.block, "1");
      return {
        f,
        out,
        err,
        fds,
        close: () => {
          for (const fd of [out, err, ...fds, ends.info ?? -1, ends.block ?? -1]) if (fd >= 0) closeSync(fd);
        },
      };
    },
  };
}

/** (a) The process chain, without planterd. */
async function chain(): Promise<void> {
  header(`${BENCH} (a): the chain of one sandboxed true, ${CHAIN_RUNS} interleaved runs each`);
  const v = viewFixture();
  const drop = dropArgv(NOBODY);
  const withJob = async (argvOf: (j: ReturnType<typeof v.job>) => string[]) => {
    const j = v.job();
    try {
      return await timed(argvOf(j), { fds: j.fds, out: j.out, err: j.err });
    } finally {
      j.close();
    }
  };
  // A sandbox made ahead: the recorder (piped) has started bwrap, whose job is a shell waiting for
  // one line on its stdin; the time is from the line to the recorder's end.
  const warm = async (): Promise<[number, number]> => {
    const j = v.job();
    makePipes(j.f.status);
    const gate = join(j.f.status, "..", "gate");
    const mk = Bun.spawnSync(["mkfifo", "-m", "600", gate]);
    if (mk.exitCode !== 0) throw new Error("mkfifo gate failed");
    const gateFd = openSync(gate, "r+");
    const argv = [
      ...drop,
      ...v.plan.argv.slice(0, -1),
      "/bin/sh",
      "-c",
      'read -r _ <&9; exec 9<&-; exec "$@"',
      "w",
      "/bin/true",
    ];
    const p = Bun.spawn(recorderArgv(j.f.status, argv, true), {
      cwd: "/",
      env: HOST_ENV,
      stdio: ["ignore", j.out, j.err, ...j.fds, gateFd, gateFd, gateFd, gateFd, gateFd, gateFd],
      detached: true,
    });
    try {
      // The sandbox is up when its shell holds the gate open for reading inside.
      await waitFor(
        () => existsSync(j.f.pid) && readFileSync(j.f.pid, "utf8").trim().length > 0,
        "warm recorder",
        5000,
      );
      await Bun.sleep(40);
      const t0 = performance.now();
      writeSync(gateFd, "go\n");
      const code = await p.exited;
      const wall = performance.now() - t0;
      if (code !== 0) throw new Error(`warm sandbox exited ${code}`);
      return [wall, Number.NaN];
    } finally {
      closeSync(gateFd);
      j.close();
    }
  };
  const steps: [string, () => Promise<[number, number]>][] = [
    ["bare bwrap as root (the goals' baseline)", () => timed([...BARE, "/bin/true"])],
    ["setpriv + bwrap, planter's view", () => withJob(() => [...drop, ...v.plan.argv])],
    [
      "recorder (direct) + setpriv + view",
      () => withJob((j) => recorderArgv(j.f.status, [...drop, ...v.plan.argv], false)),
    ],
    [
      "recorder + pumps + setpriv + view (today)",
      () =>
        withJob((j) => {
          makePipes(j.f.status);
          return recorderArgv(j.f.status, [...drop, ...v.plan.argv], true);
        }),
    ],
    ["warm sandbox: command → recorder's end", warm],
    ["/bin/true", () => timed(["/bin/true"])],
    ["setpriv … /bin/true", () => timed([...drop, "/bin/true"])],
    [
      "chroot --userspec … /bin/true",
      () => timed(["chroot", "--userspec=65534:65534", "--groups=", "--skip-chdir", "/", "/bin/true"]),
    ],
  ];
  try {
    const r = await interleave(steps, CHAIN_RUNS);
    for (const [name, s] of r) line(name, s);
  } finally {
    rmSync(v.base, { recursive: true, force: true });
  }
}

/** (b) What one metadata operation costs on the state disk (and on tmpfs). */
function files(): void {
  header(`${BENCH} (b): metadata operations of a launch, µs each (200 each)`);
  const N = 200;
  for (const where of ["/tmp", "/dev/shm"]) {
    if (!existsSync(where)) continue;
    const base = mkdtempSync(join(where, "pl-fs-"));
    const t = (f: (i: number) => void) => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < N; i++) f(i);
      const c = process.cpuUsage(c0);
      return `${(((performance.now() - t0) / N) * 1000).toFixed(0)}/${((c.user + c.system) / N).toFixed(0)}`;
    };
    const mkdir = t((i) => mkdirSync(join(base, `d${i}`), { mode: 0o700 }));
    const create = t((i) => writeFileSync(join(base, `d${i}`, "exit"), "-  \n", { mode: 0o600 }));
    const fifo = t((i) => makePipes(join(base, `d${i}`, "exit")));
    const input = t((i) => {
      const f = join(base, `d${i}`, ".input");
      writeFileSync(f, new Uint8Array(2048), { mode: 0o600 });
      closeSync(openSync(f, "r"));
      unlinkSync(f);
    });
    const memfd = t(() => {
      for (const fd of openInputs([{ data: new Uint8Array(2048) }], base)) closeSync(fd);
    });
    note(
      `${where}: wall/CPU µs — mkdir ${mkdir}, create ${create}, two FIFOs ${fifo}, input through a file ${input}, input as openInputs makes it now ${memfd}`,
    );
    rmSync(base, { recursive: true, force: true });
  }
}

/** (c) cgroup v1 groups under this process's own: made, entered, removed. */
async function cgroups(): Promise<void> {
  header(`${BENCH} (c): cgroup v1 groups (memory, pids, freezer) made, entered by a shell, removed`);
  const own = new Map<string, string>();
  for (const l of readFileSync("/proc/self/cgroup", "utf8").trim().split("\n")) {
    const [, ctl, path] = l.split(":");
    for (const c of (ctl ?? "").split(",")) own.set(c, path ?? "/");
  }
  const dirs = ["memory", "pids", "freezer"]
    .filter((c) => own.has(c) && existsSync(`/sys/fs/cgroup/${c}`))
    .map((c) => join(`/sys/fs/cgroup/${c}`, own.get(c) as string));
  if (process.getuid?.() !== 0 || dirs.length < 3) {
    note("needs root and the v1 memory, pids and freezer hierarchies: skipped");
    return;
  }
  const make: number[] = [];
  const enter: number[] = [];
  const remove: number[] = [];
  for (let i = 0; i < 30; i++) {
    const gs = dirs.map((d) => join(d, `planter-bench-${process.pid}-${i}`));
    let t0 = performance.now();
    for (const g of gs) mkdirSync(g);
    writeFileSync(join(gs[1] as string, "pids.max"), "4096");
    make.push(performance.now() - t0);
    const script = `for f in "$@"; do echo $$ >"$f/cgroup.procs"; done`;
    t0 = performance.now();
    const p = Bun.spawn(["/bin/sh", "-c", script, "sh", ...gs], { stdio: ["ignore", "ignore", "inherit"] });
    await p.exited;
    enter.push(performance.now() - t0);
    t0 = performance.now();
    for (const g of gs) {
      for (let k = 0; k < 100; k++) {
        try {
          rmdirSync(g);
          break;
        } catch {
          await Bun.sleep(1);
        }
      }
    }
    remove.push(performance.now() - t0);
  }
  const base = await timed(["/bin/sh", "-c", ":"]);
  note(
    `p50: make ${median(make).toFixed(2)} ms; a shell that enters all three and exits ${median(enter).toFixed(2)} ms (sh alone ${base[0].toFixed(2)}); remove ${median(remove).toFixed(2)} ms`,
  );
}

/** A commit's binary, compiled as this tree's is (.ci/compile), once, in .bench/. */
function baseBinary(commit: string): string {
  const dir = join(ROOT, ".bench", `launch-${commit}`);
  const bin = join(ROOT, ".bench", `planter-launch-${commit}`);
  if (existsSync(bin)) return bin;
  mkdirSync(join(ROOT, ".bench"), { recursive: true });
  const sh = (argv: string[], cwd = ROOT) => {
    const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString().trim()}`);
  };
  if (!existsSync(dir)) sh(["git", "worktree", "add", "--detach", dir, commit]);
  sh(["bun", "install", "--frozen-lockfile"], dir);
  sh([join(dir, ".ci", "compile"), bin, commit], dir);
  return bin;
}

interface Side {
  name: string;
  bin: string;
  home: string;
  daemon: Subprocess;
  client: Client;
}

async function start(name: string, bin: string, extra = ""): Promise<Side> {
  const home = tempHome("pl");
  chmodSync(home, 0o755);
  writeFileSync(join(home, "config.toml"), `[sandbox]\nmode = "enforced"\n${extra}[jobs]\nroot_peer_user = "nobody"\n`);
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", PLANTER_HOME: home, NO_COLOR: "1" };
  const daemon = Bun.spawn([bin, "daemon"], { env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  const client = new Client(join(home, "run", "planterd.sock"));
  await waitFor(
    () =>
      client.health().then(
        (h) => h.ok,
        () => false,
      ),
    `${name} planterd to answer`,
    20_000,
  );
  return { name, bin, home, daemon, client };
}

/** (d) End to end: `planter run -- true`, and throughput, this tree against the baseline. */
async function endToEnd(): Promise<void> {
  header(`${BENCH} (d): planter run -- true (${E2E_RUNS} interleaved) and ${JOBS} jobs from 4 clients, vs ${BASE}`);
  await ensureFreshBinary();
  const sides = [
    await start("this tree", BINARY),
    await start("this tree, warm_ms = 0", BINARY, "warm_ms = 0\n"),
    await start(`base ${BASE}`, baseBinary(BASE)),
  ];
  try {
    const run = (s: Side) => async (): Promise<[number, number]> => {
      const t0 = performance.now();
      const p = Bun.spawn([s.bin, "run", "--", "true"], {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", PLANTER_HOME: s.home, NO_COLOR: "1" },
        stdio: ["ignore", "ignore", "pipe"],
      });
      const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
      if (code !== 0) throw new Error(`${s.name}: planter run -- true exited ${code}: ${err.trim()}`);
      return [performance.now() - t0, cpuOf(p)];
    };
    const steps: [string, () => Promise<[number, number]>][] = [
      ...sides.map((s) => [`planter run -- true (${s.name})`, run(s)] as [string, () => Promise<[number, number]>]),
      ["bare bwrap as root", () => timed([...BARE, "/bin/true"])],
    ];
    const fj = Bun.which("firejail");
    if (fj)
      steps.push([
        "firejail --noprofile --net=none true",
        () => timed([fj, "--quiet", "--noprofile", "--net=none", "true"]),
      ]);
    else note("firejail is not installed (apt-get install firejail): no comparison with it");
    const r = await interleave(steps, E2E_RUNS);
    for (const [name, s] of r) line(name, s);
    const mine = median(r.get(steps[0]?.[0] as string)?.wall ?? []);
    const bare = median(r.get("bare bwrap as root")?.wall ?? []);
    report(BENCH, "run -- true p50 ÷ bare bwrap p50 (this tree)", mine / bare, "×", "le", 3, 2);
    if (fj) {
      const fire = median(r.get("firejail --noprofile --net=none true")?.wall ?? []);
      report(BENCH, "run -- true p50 ÷ firejail p50 (this tree)", mine / fire, "×", "le", 0.6, 2);
    }

    // Throughput: halves in turn for each side, xargs bare between.
    const through = async (s: Side, n: number) => {
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: 4 }, async (_, k) => {
          for (let i = k; i < n; i += 4) {
            const j = await s.client.createJob({ argv: ["/bin/true"] });
            const w = await s.client.waitJob(j.id, 60_000);
            if (w.job.state !== "exited") throw new Error(`${s.name}: job ${j.id} ${w.job.state}: ${w.job.message}`);
          }
        }),
      );
      return performance.now() - t0;
    };
    const xargs = (n: number) => {
      const t0 = performance.now();
      const x = Bun.spawnSync(["sh", "-c", `seq ${n} | xargs -P4 -I{} ${BARE.join(" ")} /bin/true`]);
      if (x.exitCode !== 0) throw new Error("xargs bare bwrap failed");
      return performance.now() - t0;
    };
    const half = Math.ceil(JOBS / 2);
    const total = new Map<string, number>([["bare", 0], ...sides.map((s) => [s.name, 0] as [string, number])]);
    for (const s of sides) await through(s, 20);
    for (const n of [half, JOBS - half]) {
      for (const s of sides) total.set(s.name, (total.get(s.name) ?? 0) + (await through(s, n)));
      total.set("bare", (total.get("bare") ?? 0) + xargs(n));
    }
    const b = total.get("bare") as number;
    for (const s of sides) {
      note(
        `${JOBS} jobs, 4 clients, ${s.name}: ${((total.get(s.name) as number) / 1000).toFixed(2)} s (${((total.get(s.name) as number) / b).toFixed(2)}× bare ${(b / 1000).toFixed(2)} s)`,
      );
    }
    report(
      BENCH,
      `${JOBS} jobs, 4 clients ÷ xargs -P4 bare bwrap (this tree)`,
      (total.get(sides[0]?.name as string) as number) / b,
      "×",
      "le",
      1.2,
      2,
    );
  } finally {
    for (const s of sides) {
      for (const j of (await s.client.listJobs({ state: "running" }).catch(() => ({ jobs: [] }))).jobs) {
        await s.client.killJob(j.id, { force: true }).catch(() => undefined);
      }
      s.daemon.kill("SIGTERM");
      await s.daemon.exited;
      rmSync(s.home, { recursive: true, force: true });
    }
  }
}

export async function launchBench(): Promise<void> {
  if (process.platform !== "linux" || !Bun.which("bwrap")) {
    header(`${BENCH}: needs Linux and bubblewrap: skipped`);
    return;
  }
  const parts = (process.env.PLANTER_LAUNCH_PARTS ?? "chain,files,cgroups,e2e").split(",");
  if (parts.includes("chain")) await chain();
  if (parts.includes("files")) files();
  if (parts.includes("cgroups")) await cgroups();
  if (parts.includes("e2e")) await endToEnd();
}

if (import.meta.main) await launchBench();
