/**
 * 4. Compiled CLI cold start: `dist/planter --version` and `dist/planter job ls` against a running
 * daemon, and `--version` against an empty compiled Bun binary (#13: ≤ 1.6×), interleaved.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { baseEnv, ROOT } from "../test/harness.ts";
import { BINARY, ensureBinary, header, median, note, report, spread, withDaemon } from "./common.ts";

const BENCH = "4 cli";
const RUNS = 30;
const WARMUP = 3;

/** Wall times in ms of `argv` run `runs` times (after `warmup` untimed runs), via hyperfine or Bun.spawn. */
async function timeCommand(
  argv: string[],
  env: Record<string, string>,
  runs: number,
  warmup: number,
  hyperfine: string | null,
): Promise<number[]> {
  // One checked run first: the timed runs discard the output.
  const check = Bun.spawn(argv, { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [code, out, err] = await Promise.all([
    check.exited,
    new Response(check.stdout).text(),
    new Response(check.stderr).text(),
  ]);
  if (code !== 0) throw new Error(`${argv.join(" ")} exited ${code}: ${err || out}`);

  if (hyperfine) {
    const json = join(env.PLANTER_HOME ?? "/tmp", `hyperfine-${process.pid}.json`);
    const h = Bun.spawn(
      [
        hyperfine,
        "-N",
        "--warmup",
        String(warmup),
        "--runs",
        String(runs),
        "--export-json",
        json,
        "--style",
        "none",
        argv.join(" "),
      ],
      { env, stdin: "ignore", stdout: "ignore", stderr: "pipe" },
    );
    const [hcode, herr] = await Promise.all([h.exited, new Response(h.stderr).text()]);
    if (hcode !== 0) throw new Error(`hyperfine failed (${hcode}): ${herr}`);
    const data = (await Bun.file(json).json()) as { results: { times: number[] }[] };
    return (data.results[0]?.times ?? []).map((s) => s * 1000);
  }

  const times: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = performance.now();
    const p = Bun.spawn(argv, { env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    const c = await p.exited;
    const t1 = performance.now();
    if (c !== 0) throw new Error(`${argv.join(" ")} exited ${c}`);
    if (i >= warmup) times.push(t1 - t0);
  }
  return times;
}

/** A compiled Bun binary that prints one line: the floor any compiled CLI starts from. */
function emptyBinary(): string {
  const dir = join(ROOT, ".bench");
  const bin = join(dir, "empty-bun");
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "empty-bun.ts"), 'console.log("planter 0.0.0");\n');
  const r = Bun.spawnSync(
    [
      "bun",
      "build",
      "--compile",
      "--minify",
      "--bytecode",
      "--format=esm",
      join(dir, "empty-bun.ts"),
      "--outfile",
      bin,
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  if (r.exitCode !== 0) throw new Error(`building the empty binary failed: ${r.stderr.toString()}`);
  return bin;
}

/** Wall and CPU (user + system) ms of each argv, run in turn `runs` times (load hits all alike). */
function interleaved(argvs: string[][], env: Record<string, string>, runs: number) {
  const out = argvs.map(() => ({ wall: [] as number[], cpu: [] as number[] }));
  for (let i = 0; i < runs + 2; i++) {
    argvs.forEach((argv, k) => {
      const t0 = performance.now();
      const r = Bun.spawnSync(argv, { env, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
      const wall = performance.now() - t0;
      if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} exited ${r.exitCode}`);
      if (i < 2) return;
      out[k]?.wall.push(wall);
      const cpu = r.resourceUsage?.cpuTime.total;
      if (cpu !== undefined) out[k]?.cpu.push(Number(cpu) / 1000);
    });
  }
  return out;
}

export async function cliBench(): Promise<void> {
  header(`4. Compiled CLI cold start (${RUNS} runs each, median wall time)`);
  await ensureBinary();
  const hyperfine = Bun.which("hyperfine");
  note(
    hyperfine
      ? `timing with ${hyperfine} (-N, ${WARMUP} warm-up runs)`
      : `hyperfine not found: timing performance.now() around Bun.spawn + exited (${WARMUP} warm-up runs)`,
  );
  await withDaemon("source", async (d) => {
    // A few jobs, so that `job ls` prints a table rather than an empty list.
    for (let i = 0; i < 5; i++) {
      const j = await d.client.createJob({ argv: ["/bin/echo", `job ${i}`] });
      await d.client.waitJob(j.id, 10_000);
    }
    const env = baseEnv(d.home);

    const floor = await timeCommand(["/bin/true"], env, RUNS, WARMUP, hyperfine);
    const version = await timeCommand([BINARY, "--version"], env, RUNS, WARMUP, hyperfine);
    report(BENCH, "dist/planter --version", median(version), "ms", "le", 15, 2);
    note(`--version: ${spread(version, 2)}`);

    const ls = await timeCommand([BINARY, "job", "ls"], env, RUNS, WARMUP, hyperfine);
    report(BENCH, "dist/planter job ls (5 jobs)", median(ls), "ms", "le", 25, 2);
    note(`job ls: ${spread(ls, 2)}`);

    const [empty, planter] = interleaved(
      [
        [emptyBinary(), "--version"],
        [BINARY, "--version"],
      ],
      env,
      60,
    );
    if (empty && planter) {
      note(
        `interleaved, 60 runs: empty Bun binary ${median(empty.wall).toFixed(2)} ms wall / ${median(empty.cpu).toFixed(2)} ms CPU; ` +
          `planter --version ${median(planter.wall).toFixed(2)} / ${median(planter.cpu).toFixed(2)} ms`,
      );
      report(
        BENCH,
        "planter --version ÷ empty compiled Bun binary (wall, p50)",
        median(planter.wall) / median(empty.wall),
        "×",
        "le",
        1.6,
        2,
      );
      report(BENCH, "the same in CPU time (p50)", median(planter.cpu) / median(empty.cpu), "×", "le", 1.6, 2);
    }

    const src = await timeCommand(["bun", join(ROOT, "scripts", "planter.ts"), "--version"], env, 10, 1, hyperfine);
    note(
      `for reference: spawning /bin/true ${median(floor).toFixed(2)} ms; ` +
        `bun scripts/planter.ts --version ${median(src).toFixed(2)} ms (10 runs; spawns git for the commit)`,
    );
  });
}
