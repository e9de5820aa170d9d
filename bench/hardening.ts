/**
 * 11. What containment costs: `planter run -- true` (enforced, bubblewrap) with the hardened
 * binary against the binary of a baseline commit (default: the last one before #10's hardening),
 * each talking to its own planterd, interleaved in one run. Goal: at most 2 ms more at p50.
 * `PLANTER_BASELINE=<commit>` picks another baseline.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { Client } from "../lib/api/client.ts";
import { ROOT, tempHome, waitFor } from "../test/harness.ts";
import { BINARY, header, median, note, report, spread } from "./common.ts";
import { ensureFreshBinary } from "./fresh.ts";

const BENCH = "11 hardening";
const BASELINE = process.env.PLANTER_BASELINE ?? "e27ba68";
const RUNS = 40;
const WARMUP = 5;

/** Build (once) a commit's binary in .bench/, from a git worktree. */
export async function baselineBinary(commit = BASELINE): Promise<string> {
  const dir = join(ROOT, ".bench", `base-${commit}`);
  const bin = join(ROOT, ".bench", `planter-${commit}`);
  if (existsSync(bin)) return bin;
  mkdirSync(join(ROOT, ".bench"), { recursive: true });
  const sh = (argv: string[], cwd = ROOT) => {
    const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString().trim()}`);
  };
  if (!existsSync(dir)) sh(["git", "worktree", "add", "--detach", dir, commit]);
  sh(["bun", "install", "--frozen-lockfile"], dir);
  sh(
    ["bun", "build", "--compile", "--minify", "--bytecode", "--format=esm", "scripts/planter.ts", "--outfile", bin],
    dir,
  );
  return bin;
}

interface Side {
  name: string;
  bin: string;
  home: string;
  daemon: Subprocess;
  times: number[];
}

async function start(name: string, bin: string, config: string): Promise<Side> {
  const home = tempHome("ph");
  writeFileSync(join(home, "config.toml"), config);
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
  return { name, bin, home, daemon, times: [] };
}

async function runTrue(s: Side): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn([s.bin, "run", "--", "true"], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", PLANTER_HOME: s.home, NO_COLOR: "1" },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`${s.name}: planter run -- true exited ${code}: ${err.trim()}`);
  return performance.now() - t0;
}

export async function hardeningBench(): Promise<void> {
  header(`${BENCH}: planter run -- true, enforced, hardened vs ${BASELINE}`);
  await ensureFreshBinary();
  const base = await baselineBinary();
  const enforced = '[sandbox]\nmode = "enforced"\n';
  // The baseline's config schema knows no root_peer_user (and runs root's jobs as root).
  const sides = [
    await start("hardened", BINARY, `${enforced}[jobs]\nroot_peer_user = "nobody"\n`),
    await start(`baseline ${BASELINE}`, base, enforced),
  ];
  try {
    for (let i = 0; i < WARMUP + RUNS; i++) {
      for (let k = 0; k < sides.length; k++) {
        const s = sides[(i + k) % sides.length] as Side;
        const t = await runTrue(s);
        if (i >= WARMUP) s.times.push(t);
      }
    }
    const [h, b] = sides as [Side, Side];
    note(`hardened: ${spread(h.times)}`);
    note(`${b.name}: ${spread(b.times)}`);
    report(
      BENCH,
      "hardened p50 − baseline p50 (planter run -- true)",
      median(h.times) - median(b.times),
      "ms",
      "le",
      2,
      2,
    );
  } finally {
    for (const s of sides) {
      s.daemon.kill("SIGTERM");
      await s.daemon.exited;
    }
  }
}

if (import.meta.main) await hardeningBench();
