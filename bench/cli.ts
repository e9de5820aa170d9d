/** 4. Compiled CLI cold start: `dist/planter --version` and `dist/planter job ls` against a running daemon. */
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

    const src = await timeCommand(["bun", join(ROOT, "scripts", "planter.ts"), "--version"], env, 10, 1, hyperfine);
    note(
      `for reference: spawning /bin/true ${median(floor).toFixed(2)} ms; ` +
        `bun scripts/planter.ts --version ${median(src).toFixed(2)} ms (10 runs; spawns git for the commit)`,
    );
  });
}
