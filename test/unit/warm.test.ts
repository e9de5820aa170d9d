/** Warm sandboxes' pure parts: the job's commands for the waiting shell, plan keys, fd renumbering. */
import { describe, expect, test } from "bun:test";
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { planKey, SWEEP_AGE_MS, shiftFds, WarmPool, warmScript } from "../../lib/jobs/warm.ts";
import type { SpawnPlan } from "../../lib/sandbox/backend.ts";
import { openInputs } from "../../lib/sandbox/inputs.ts";

describe("warmScript", () => {
  test("a shell that reads it, then `exec`, runs the argv in the cwd with exactly the job's environment (PWD the cwd, as bwrap sets it)", () => {
    const env = {
      PLAIN: "x",
      QUOTES: `it's "quoted" $HOME \`cmd\` \\n`,
      LINES: "one\ntwo\n",
      EMPTY: "",
      PWD: "/set/by/the/job",
    };
    const argv = ["/usr/bin/env", "-0"];
    const script = `${warmScript({ argv, env, cwd: "/tmp" })}exec "$@" </dev/null\n`;
    const r = Bun.spawnSync(["/bin/sh", "-s"], { env: {}, stdin: new TextEncoder().encode(script), cwd: "/" });
    const got = Object.fromEntries(
      r.stdout
        .toString()
        .split("\0")
        .filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(got).toEqual({ ...env, PWD: "/tmp" });
  });

  test("without the `exec` the shell runs nothing of the job", () => {
    const marker = join(mkdtempSync(join(tmpdir(), "pt-warm-")), "ran");
    const r = Bun.spawnSync(["/bin/sh", "-s"], {
      stdin: new TextEncoder().encode(warmScript({ argv: ["/usr/bin/touch", marker], env: {}, cwd: "/" })),
    });
    expect(r.exitCode).toBe(0);
    expect(() => readFileSync(marker)).toThrow();
    rmSync(join(marker, ".."), { recursive: true, force: true });
  });
});

describe("the sweep of a previous planterd's warm dirs", () => {
  test("old dirs go at once; dirs younger than SWEEP_AGE_MS (still in their chain's opens) go later", () => {
    const state = mkdtempSync("/tmp/pt-warm-sweep-");
    try {
      const root = join(state, "warm");
      for (const n of ["w-old", "w-young"]) mkdirSync(join(root, n, "inner"), { recursive: true });
      const now = Date.now();
      utimesSync(join(root, "w-old"), (now - SWEEP_AGE_MS - 1000) / 1000, (now - SWEEP_AGE_MS - 1000) / 1000);
      let later: (() => void) | null = null;
      WarmPool.sweep(state, now, (f) => {
        later = f;
      });
      expect(readdirSync(root)).toEqual(["w-young"]);
      // A dir the new planterd makes meanwhile is its own: the later sweep leaves it.
      mkdirSync(join(root, "w-new"));
      (later as (() => void) | null)?.();
      expect(readdirSync(root)).toEqual(["w-new"]);
      WarmPool.sweep(join(state, "none"), now, () => {
        throw new Error("nothing to sweep later");
      });
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});

describe("plan keys and fds", () => {
  const dir = mkdtempSync(join(tmpdir(), "pt-warmkey-"));
  const words = (ws: string[]) => ({ data: new TextEncoder().encode(ws.map((w) => `${w}\0`).join("")) });
  const plan = (bind: string): SpawnPlan => ({
    argv: ["/usr/bin/bwrap", "--args", "3", "--", "/bin/sh", "-s"],
    env: {},
    cwd: "/",
    pipes: true,
    inputs: [words(["--bind-fd", "4", bind, "--seccomp", "5"]), { path: bind }, { data: new Uint8Array([1, 2]) }],
  });

  test("a bind source replaced by another inode changes the key; the same one keeps it", () => {
    const f = join(dir, "src");
    writeFileSync(f, "a");
    const before = planKey(plan(f), null);
    expect(planKey(plan(f), null)).toBe(before);
    // The old inode stays alive under another name, so the new file cannot get its number back.
    renameSync(f, join(dir, "src.old"));
    writeFileSync(f, "a");
    expect(planKey(plan(f), null)).not.toBe(before);
    expect(planKey(plan(join(dir, "missing")), null)).toBeNull();
  });

  test("inputs move one fd up, in bwrap's argv and its argument list; an input no option names refuses", () => {
    const f = join(dir, "src");
    writeFileSync(f, "a");
    const p = plan(f);
    const fds = openInputs(p.inputs ?? [], dir);
    const s = shiftFds(p, fds, dir);
    expect(s?.argv).toEqual(["/usr/bin/bwrap", "--args", "4", "--", "/bin/sh", "-s"]);
    const args = readFileSync(`/proc/self/fd/${s?.args}`, "utf8").split("\0");
    expect(args).toEqual(["--bind-fd", "5", f, "--seccomp", "6", ""]);
    for (const fd of [s?.args as number, ...fds.slice(1)]) closeSync(fd);
    // An input no known option names (a future bwrap option taking an fd) cannot be renumbered.
    const unnamed = { ...p, inputs: [...(p.inputs ?? []), { data: new Uint8Array([3]) }] };
    const more = openInputs(unnamed.inputs, dir);
    expect(shiftFds(unnamed, more, dir)).toBeNull();
    for (const fd of more) closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });
});
