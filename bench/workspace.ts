#!/usr/bin/env bun
/**
 * Workspace review: `snapshot` before a job and `review` after it, on a real repository of 1k and
 * 10k files in nested directories (committed with git, so .git holds one loose object per file),
 * nothing changed by the job — the cost every job pays. Runs alone (`bun bench/workspace.ts`) or as
 * `workspaceBench()`.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { review, snapshot } from "../lib/sandbox/workspace.ts";
import { header, note, percentile, report, spread } from "./common.ts";

const BENCH = "workspace";
const WARMUP = 5;
const ITERATIONS = 100;
const GOAL_MS = 20;

/** `files` source files, ten to a directory three levels down, committed; a .vscode and a nested repo beside. */
function makeRepo(dir: string, files: number): void {
  let n = 0;
  outer: for (let a = 0; ; a++) {
    for (let b = 0; b < 10; b++) {
      for (let d = 0; d < 10; d++) {
        const leaf = join(dir, `src${a}`, `mod${b}`, `part${d}`);
        mkdirSync(leaf, { recursive: true });
        for (let f = 0; f < 10; f++) {
          writeFileSync(join(leaf, `file${f}.ts`), `export const x${n} = ${n};\n`);
          if (++n >= files) break outer;
        }
      }
    }
  }
  mkdirSync(join(dir, ".vscode"));
  writeFileSync(join(dir, ".vscode", "settings.json"), '{"editor.tabSize": 2}\n');
  writeFileSync(join(dir, "package.json"), '{"name": "bench"}\n');
  const git = (...args: string[]) => {
    const p = Bun.spawnSync(["git", ...args], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: dir,
        GIT_CONFIG_NOSYSTEM: "1",
        GIT_AUTHOR_NAME: "b",
        GIT_AUTHOR_EMAIL: "b@example.com",
        GIT_COMMITTER_NAME: "b",
        GIT_COMMITTER_EMAIL: "b@example.com",
      },
      stdout: "ignore",
      stderr: "pipe",
    });
    if (p.exitCode !== 0) throw new Error(`git ${args.join(" ")} exited ${p.exitCode}: ${p.stderr.toString()}`);
  };
  git("init", "-q");
  git("add", "-A");
  git("commit", "-qm", "bench");
}

async function measure(files: number, root: string): Promise<void> {
  const dir = join(root, `cell-${files}`);
  mkdirSync(dir);
  const t0 = performance.now();
  makeRepo(dir, files);
  note(`${files} files: repository made and committed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const snap: number[] = [];
  const rev: number[] = [];
  const both: number[] = [];
  let findings = 0;
  for (let i = 0; i < WARMUP + ITERATIONS; i++) {
    const a = performance.now();
    const s = snapshot(dir);
    const b = performance.now();
    findings += review(dir, s, { jobId: "j-bench" }).length;
    const c = performance.now();
    if (i < WARMUP) continue;
    snap.push(b - a);
    rev.push(c - b);
    both.push(c - a);
  }
  if (findings !== 0) throw new Error(`review flagged ${findings} entries of an unchanged cell`);
  const json = JSON.stringify(snapshot(dir)).length;
  if (files >= 10_000)
    report(BENCH, `snapshot + review, ${files} files, p50`, percentile(both, 50), "ms", "le", GOAL_MS);
  else note(`snapshot + review, ${files} files: p50 ${percentile(both, 50).toFixed(2)} ms`);
  note(`snapshot + review, ${files} files: p95 ${percentile(both, 95).toFixed(2)} ms`);
  const p = (xs: number[]) => `p50 ${percentile(xs, 50).toFixed(2)} ms, p95 ${percentile(xs, 95).toFixed(2)} ms`;
  note(`snapshot ${files} files: ${p(snap)} (${spread(snap)})`);
  note(`review   ${files} files: ${p(rev)} (${spread(rev)})`);
  note(`snapshot JSON ${json} bytes`);
}

export async function workspaceBench(): Promise<void> {
  header(`Workspace: snapshot and review of an unchanged cell (${ITERATIONS} each, after ${WARMUP} warm-up)`);
  note(
    `load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  const root = mkdtempSync("/tmp/pb-ws-");
  try {
    await measure(1_000, root);
    await measure(10_000, root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.main) await workspaceBench();
