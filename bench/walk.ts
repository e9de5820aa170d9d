#!/usr/bin/env bun
/**
 * 11. A huge cell's workspace walks against everyone else's requests: a cell of 100k plain files
 * and 10k files under a package's tool config (hard links: made in seconds), a job in it
 * (enforced, bwrap) that touches the tool config so its review reads it all again, and meanwhile
 * another client reading a job over and over. Its latency during the snapshot and the review,
 * beside the same loop idle, and how long each walk took: p99 during the snapshot, the longest wait
 * during the job and its review (most of those reads fall in the job's own run). Compiled `dist/planter`. Runs alone
 * (`bun bench/walk.ts`) or as `walkBench()`.
 */
import { chmodSync, linkSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "../lib/api/client.ts";
import { baseEnv, cleanup, tempHome } from "../test/harness.ts";
import { BINARY, ensureBinary, header, note, percentile, report, spread } from "./common.ts";

const BENCH = "11 walk";
const PLAIN = 100_000;
const CONFIG = 10_000;

/** `count` names for one file in `dir` (a hard link has at most 65000 names). */
function links(dir: string, count: number, mode = 0o644): void {
  mkdirSync(dir, { recursive: true });
  let file = "";
  for (let i = 0; i < count; i++) {
    if (i % 50_000 === 0) {
      file = join(dir, `f${i}`);
      writeFileSync(file, "{}\n");
      chmodSync(file, mode);
    } else linkSync(file, join(dir, `f${i}`));
  }
}

export async function walkBench(): Promise<void> {
  header(`11. A cell of ${(PLAIN + CONFIG) / 1000}k files: other requests during its snapshot and review`);
  await ensureBinary();
  const home = tempHome("pb");
  const socket = join(home, "run", "planterd.sock");
  await Bun.write(join(home, "config.toml"), '[sandbox]\nmode = "enforced"\n');
  const proc = Bun.spawn([BINARY, "daemon"], { env: baseEnv(home), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const client = new Client(socket);
  try {
    for (let i = 0; ; i++) {
      if (
        await client.health().then(
          () => true,
          () => false,
        )
      )
        break;
      if (proc.exitCode !== null || i > 4000) throw new Error("dist/planter daemon did not start");
      await Bun.sleep(5);
    }
    const ready = () => client.ready().catch(() => null);
    if (!(await ready())?.sandbox?.ok) {
      note("skipped: no working bwrap here");
      return;
    }
    await client.createCell({ name: "huge" });
    const cell = join(home, "state", "cells", "huge");
    const t0 = performance.now();
    for (let d = 0; d < PLAIN / 10_000; d++) links(join(cell, "data", `d${d}`), 10_000);
    links(join(cell, "node_modules", "pkg", ".vscode"), CONFIG, 0o666);
    note(`tree made in ${((performance.now() - t0) / 1000).toFixed(1)} s (hard links)`);
    const probe = await client.createJob({ argv: ["/bin/true"] });
    await client.waitJob(probe.id, 30_000);

    /** GET /v1/jobs/{id} in a loop until `until` settles; latencies in ms. */
    const reads = async (until: Promise<unknown>) => {
      let done = false;
      void until.finally(() => {
        done = true;
      });
      const out: number[] = [];
      while (!done) {
        const t = performance.now();
        await client.getJob(probe.id);
        out.push(performance.now() - t);
      }
      return out;
    };

    const idle = await reads(Bun.sleep(1000));
    const posted = performance.now();
    const job = client.createJob({
      cell: "huge",
      argv: ["/bin/sh", "-c", "touch node_modules/pkg/.vscode/f0"],
    });
    const during = await reads(job);
    const snapshotMs = performance.now() - posted;
    const id = (await job).id;
    // The review: from the job's start until its end is recorded (it is recorded after the review).
    const reviewed = performance.now();
    const during2 = await reads(client.waitJob(id, 120_000));
    const reviewMs = performance.now() - reviewed;

    note(`idle: ${spread(idle, 2)}`);
    note(`during the snapshot (${(snapshotMs / 1000).toFixed(2)} s to the job's answer): ${spread(during, 2)}`);
    note(`during the job and its review (${(reviewMs / 1000).toFixed(2)} s to its end): ${spread(during2, 2)}`);
    report(BENCH, "GET /v1/jobs/{id} p99 during a 110k-file snapshot", percentile(during, 99), "ms", "le", 10, 2);
    // Most reads of this window fall in the job's own run: the longest one is the review's mark.
    report(BENCH, "GET /v1/jobs/{id} longest during the job and its review", Math.max(...during2), "ms", "le", 50, 2);
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
    cleanup(home);
  }
}

if (import.meta.main) await walkBench();
