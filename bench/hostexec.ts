/**
 * hostexec: what the one wrapper for host programs (lib/host/exec.ts) costs. (a) `getent group root`
 * through exec() against a bare Bun.spawn of the same argv, and through zx's `$` when zx can be
 * imported (the wrapper was built on zx before; see plans/design.md), interleaved. (b) What loading
 * each costs a fresh process: `bun -e` importing exec.ts, zx, or nothing.
 */
import { join } from "node:path";
import { exec } from "../lib/host/exec.ts";
import { ROOT } from "../test/harness.ts";
import { header, median, note, report, spread } from "./common.ts";

const BENCH = "hostexec";
const CALLS = 100;
const STARTS = 20;

async function bare(argv: string[]): Promise<void> {
  const p = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

type Zx = (opts: object) => (pieces: TemplateStringsArray, ...args: unknown[]) => Promise<unknown>;

async function loadZx(): Promise<Zx | null> {
  try {
    // A name in a variable: zx is not a dependency of planter any more, and may be absent.
    const name = "zx";
    return ((await import(name)) as { $: Zx }).$;
  } catch {
    return null;
  }
}

export async function hostexecBench(): Promise<void> {
  header(`${BENCH}: getent group root through exec() vs bare Bun.spawn (vs zx $ when installed), ${CALLS} interleaved`);
  const getent = Bun.which("getent");
  if (!getent) throw new Error("getent is not on PATH");
  const $ = await loadZx();
  const viaExec: number[] = [];
  const viaBare: number[] = [];
  const viaZx: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    viaBare.push(await timed(() => bare([getent, "group", "root"])));
    viaExec.push(await timed(() => exec("getent", ["group", "root"])));
    if ($)
      viaZx.push(
        await timed(
          () => $({ nothrow: true, quiet: true, stdio: ["ignore", "pipe", "pipe"] })`getent ${["group", "root"]}`,
        ),
      );
  }
  report(BENCH, "p50 exec() over bare Bun.spawn", median(viaExec) - median(viaBare), "ms", "le", 1, 3);
  note(`exec():          ${spread(viaExec)}`);
  note(`bare Bun.spawn:  ${spread(viaBare)}`);
  if ($) note(`zx $ (bash -c):  ${spread(viaZx)}`);
  else note("zx is not installed: its per-call figure is in plans/benchmarks.md (measured before it was removed)");

  header(`${BENCH}: a fresh bun process loading exec.ts, zx, or nothing, ${STARTS} interleaved`);
  const code = {
    nothing: "1",
    exec: `await import(${JSON.stringify(join(ROOT, "lib/host/exec.ts"))})`,
    zx: 'await import("zx")',
  };
  const starts: Record<keyof typeof code, number[]> = { nothing: [], exec: [], zx: [] };
  const env = { ...process.env, BUN_RUNTIME_TRANSPILER_CACHE_PATH: "0" };
  const zxThere = $ !== null;
  for (let i = 0; i < STARTS; i++)
    for (const k of Object.keys(code) as (keyof typeof code)[]) {
      if (k === "zx" && !zxThere) continue;
      starts[k].push(
        await timed(async () => {
          const p = Bun.spawn([process.execPath, "-e", code[k]], {
            cwd: ROOT,
            env,
            stdout: "ignore",
            stderr: "ignore",
          });
          if ((await p.exited) !== 0) throw new Error(`bun -e ${code[k]} failed`);
        }),
      );
    }
  report(
    BENCH,
    "p50 loading exec.ts in a fresh process",
    median(starts.exec) - median(starts.nothing),
    "ms",
    "le",
    5,
    1,
  );
  note(`bun -e 1:          ${spread(starts.nothing, 1)}`);
  note(`import exec.ts:    ${spread(starts.exec, 1)}`);
  if (zxThere) note(`import zx:         ${spread(starts.zx, 1)}`);
}
