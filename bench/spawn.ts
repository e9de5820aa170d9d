/** 2. Job spawn: POST /v1/jobs ["/bin/true"] until the answer, against a bare Bun.spawn in this process. */
import { closeSync, mkdirSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Client } from "../lib/api/client.ts";
import type { Job } from "../lib/api/contract.ts";
import { recorderArgv } from "../lib/jobs/recorder.ts";
import { allJobs, header, median, note, report, spread, withDaemon } from "./common.ts";

const BENCH = "2 spawn";
const ITERATIONS = 200;
const WARMUP = 20;
const SANDBOXED = 50;

async function postJob(socket: string): Promise<Job> {
  const res = await fetch("http://planterd/v1/jobs", {
    unix: socket,
    method: "POST",
    body: JSON.stringify({ argv: ["/bin/true"] }),
    headers: { "content-type": "application/json" },
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /v1/jobs: HTTP ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text) as Job;
}

export async function spawnBench(): Promise<void> {
  header(`2. Job spawn: POST /v1/jobs ["/bin/true"] vs bare Bun.spawn(["/bin/true"]) (${ITERATIONS} each)`);
  await withDaemon("source", async (d) => {
    const scratch = join(d.home, "bench-spawn");
    mkdirSync(scratch);
    const bare: number[] = [];
    const recorderLike: number[] = [];
    const api: number[] = [];
    const states = new Map<string, number>();
    const sandboxes = new Set<string>();
    const deadline = performance.now() + 40_000;
    for (let i = 0; i < WARMUP + ITERATIONS && performance.now() < deadline; i++) {
      const measured = i >= WARMUP;

      // Bare spawn: until Bun.spawn returns (the pid is available then).
      let t0 = performance.now();
      const p = Bun.spawn(["/bin/true"], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
      let t1 = performance.now();
      if (!p.pid) throw new Error("Bun.spawn gave no pid");
      await p.exited;
      if (measured) bare.push(t1 - t0);

      // What the daemon spawns (informational): the recorder shell, detached, output to files.
      const out = openSync(join(scratch, "out"), "a", 0o600);
      const err = openSync(join(scratch, "err"), "a", 0o600);
      rmSync(join(scratch, "pid"), { force: true }); // the recorder claims each job once
      t0 = performance.now();
      const r = Bun.spawn(recorderArgv(join(scratch, "exit"), ["/bin/true"]), {
        cwd: scratch,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
        stdin: "ignore",
        stdout: out,
        stderr: err,
        detached: true,
      });
      t1 = performance.now();
      closeSync(out);
      closeSync(err);
      await r.exited;
      if (measured) recorderLike.push(t1 - t0);

      // Through the daemon: until the 201 answer with the job running.
      t0 = performance.now();
      const job = await postJob(d.socket);
      t1 = performance.now();
      if (job.state !== "running" && job.state !== "exited") {
        throw new Error(`POST /v1/jobs answered a ${job.state} job (${job.reason}): ${job.message}`);
      }
      if (measured) {
        api.push(t1 - t0);
        states.set(job.state, (states.get(job.state) ?? 0) + 1);
        sandboxes.add(`${job.sandbox.mode}/${job.sandbox.backend}`);
      }
    }
    if (api.length < ITERATIONS) note(`time bound reached after ${api.length} iterations`);
    const overhead = median(api) - median(bare);
    report(BENCH, "p50 overhead over bare Bun.spawn", overhead, "ms", "le", 3, 3);
    note(`POST /v1/jobs:          ${spread(api)}`);
    note(`bare Bun.spawn:         ${spread(bare)}`);
    note(`recorder-like spawn:    ${spread(recorderLike)} (sh -c recorder, detached, fds to files)`);
    note(
      `answer states: ${[...states].map(([s, n]) => `${s} ${n}`).join(", ")}; sandbox ${[...sandboxes].join(", ")}; ` +
        `overhead over recorder-like spawn ${(median(api) - median(recorderLike)).toFixed(3)} ms`,
    );
    await settle(d.client);
  });

  // Context only: the shipped default sandbox mode, which uses bubblewrap where it is installed.
  await withDaemon(
    "source",
    async (d) => {
      const lat: number[] = [];
      const used = new Set<string>();
      const deadline = performance.now() + 15_000;
      for (let i = 0; i < 5 + SANDBOXED && performance.now() < deadline; i++) {
        const t0 = performance.now();
        const job = await postJob(d.socket);
        if (i >= 5) lat.push(performance.now() - t0);
        used.add(`${job.state} ${job.sandbox.mode}/${job.sandbox.backend}${job.sandbox.fallback ? " (fallback)" : ""}`);
      }
      note(`context, [sandbox] mode = "permissive": POST /v1/jobs ${spread(lat)}; jobs ${[...used].join(", ")}`);
      await settle(d.client);
    },
    '[sandbox]\nmode = "permissive"\n',
  );
}

/** Let the jobs' exits be recorded before the daemon stops (none should be left running). */
async function settle(client: Client): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && (await allJobs(client, "running")).length > 0) await Bun.sleep(20);
}
