/**
 * 15. Throughput (#13 goal 6): 1000 enforced `true` jobs through the API from 4 clients at once
 * (each submits its share and waits for each job's end) against `xargs -P4` running the same
 * number of bare `bwrap … true`, interleaved in one run. Goal: ≤ 1.2× the bare time. The compiled
 * daemon (dist/planter); as root it runs jobs as `nobody`, as it would a peer's.
 */
import { chmodSync } from "node:fs";
import { header, note, report, withDaemon } from "./common.ts";
import { ensureFreshBinary } from "./fresh.ts";

const BENCH = "15 throughput";
const JOBS = Number(process.env.PLANTER_THROUGHPUT_JOBS ?? 1000);
const CLIENTS = 4;
const BWRAP = [
  "bwrap",
  "--unshare-all",
  "--die-with-parent",
  "--ro-bind",
  "/",
  "/",
  "--dev",
  "/dev",
  "--proc",
  "/proc",
];

/** `n` bare bwrap runs, 4 at a time, through xargs: wall ms. */
function bare(n: number): number {
  const t0 = performance.now();
  const r = Bun.spawnSync(["sh", "-c", `seq ${n} | xargs -P${CLIENTS} -I{} ${BWRAP.join(" ")} /bin/true`], {
    stdout: "ignore",
    stderr: "pipe",
  });
  if (r.exitCode !== 0) throw new Error(`xargs bwrap failed: ${r.stderr.toString().slice(-500)}`);
  return performance.now() - t0;
}

export async function throughputBench(): Promise<void> {
  header(`${BENCH}: ${JOBS} enforced true jobs, ${CLIENTS} clients, against xargs -P${CLIENTS} bare bwrap`);
  if (!Bun.which("bwrap")) {
    note("bwrap is not installed: skipped");
    return;
  }
  await ensureFreshBinary();
  const root = process.getuid?.() === 0;
  const config = `[sandbox]\nmode = "enforced"\n${root ? '[jobs]\nroot_peer_user = "nobody"\n' : ""}`;
  await withDaemon(
    "compiled",
    async (d) => {
      // As root the jobs run as nobody, who must pass through the daemon's home to its cell.
      if (root) chmodSync(d.home, 0o755);
      const viaPlanter = async (n: number) => {
        const t0 = performance.now();
        await Promise.all(
          Array.from({ length: CLIENTS }, async (_, k) => {
            for (let i = k; i < n; i += CLIENTS) {
              const j = await d.client.createJob({ argv: ["/bin/true"] });
              const r = await d.client.waitJob(j.id, 60_000);
              if (r.job.state !== "exited") throw new Error(`job ${j.id} ${r.job.state}: ${r.job.message}`);
            }
          }),
        );
        return performance.now() - t0;
      };
      // Warm both, then halves in turn so load and cache hit both alike.
      await viaPlanter(20);
      bare(20);
      const half = Math.ceil(JOBS / 2);
      let p = 0;
      let b = 0;
      p += await viaPlanter(half);
      b += bare(half);
      b += bare(JOBS - half);
      p += await viaPlanter(JOBS - half);
      note(
        `planter ${(p / 1000).toFixed(2)} s (${((p / JOBS) * CLIENTS).toFixed(1)} ms per job per client); bare ${(b / 1000).toFixed(2)} s`,
      );
      report(
        BENCH,
        `${JOBS} enforced jobs, ${CLIENTS} clients ÷ xargs -P${CLIENTS} bare bwrap`,
        p / b,
        "×",
        "le",
        1.2,
        2,
      );
    },
    config,
  );
}

if (import.meta.main) await throughputBench();
