/** 5. Daemon RSS: idle after a warm-up, and with 100 running jobs; from source and the compiled binary. */
import { FINAL_STATES } from "../lib/api/contract.ts";
import {
  type BenchDaemon,
  type DaemonKind,
  ensureBinary,
  get,
  header,
  note,
  procStatusKb,
  report,
  withDaemon,
} from "./common.ts";

const BENCH = "5 rss";
const JOBS = 100;
const GOAL_MB = 60;

const mb = (kb: number) => kb / 1024;

/** Exercise every path a daemon normally takes, so that idle means "after use". */
async function warmUp(d: BenchDaemon): Promise<void> {
  const first = await d.client.createJob({ argv: ["/bin/echo", "warm"] });
  await d.client.waitJob(first.id, 10_000);
  for (let i = 0; i < 10; i++) {
    const j = await d.client.createJob({ argv: ["/bin/true"] });
    await d.client.waitJob(j.id, 10_000);
  }
  for (let i = 0; i < 500; i++) await get(d.socket, `/v1/jobs/${first.id}`);
  await d.client.listJobs({ limit: 100 });
  await d.client.logs(first.id, { offset: 0, follow: true, wait_ms: 100 });
  await d.client.listCells();
}

interface Rss {
  /** VmRSS, kB. */
  total: number;
  /** RssAnon (heaps, private) and RssFile (mapped executable and libraries, shared), kB. */
  anon: number;
  file: number;
}

const rssNow = (pid: number): Rss => ({
  total: procStatusKb(pid, "VmRSS"),
  anon: procStatusKb(pid, "RssAnon"),
  file: procStatusKb(pid, "RssFile"),
});

/** "61.2 (anon 20.1 + file 40.9)" */
const show = (r: Rss) => `${mb(r.total).toFixed(1)} (anon ${mb(r.anon).toFixed(1)} + file ${mb(r.file).toFixed(1)})`;

/** VmRSS once it has been quiet for a moment: the sample with the median VmRSS of a few. */
async function settledRss(pid: number): Promise<Rss> {
  await Bun.sleep(1000);
  const s: Rss[] = [];
  for (let i = 0; i < 5; i++) {
    s.push(rssNow(pid));
    await Bun.sleep(100);
  }
  s.sort((a, b) => a.total - b.total);
  return s[2] as Rss;
}

async function measure(kind: DaemonKind): Promise<void> {
  const label = kind === "source" ? "bun scripts/planter.ts daemon" : "dist/planter daemon";
  await withDaemon(kind, async (d) => {
    const atStart = rssNow(d.pid);
    await warmUp(d);
    const idle = await settledRss(d.pid);
    report(BENCH, `${label}: idle`, mb(idle.total), "MB", "le", GOAL_MB, 1);

    const ids: string[] = [];
    const t0 = performance.now();
    for (let i = 0; i < JOBS; i++) {
      const j = await d.client.createJob({ argv: ["sleep", "300"] });
      if (j.state !== "running") throw new Error(`job ${j.id} is ${j.state}: ${j.message}`);
      if (j.sandbox.backend !== "none") throw new Error(`job ${j.id} runs sandboxed (${j.sandbox.backend})`);
      ids.push(j.id);
    }
    const startMs = performance.now() - t0;
    const busy = await settledRss(d.pid);
    report(BENCH, `${label}: ${JOBS} running jobs`, mb(busy.total), "MB", "le", GOAL_MB, 1);

    const t1 = performance.now();
    await Promise.all(ids.map((id) => d.client.killJob(id, {})));
    const ended = await Promise.all(ids.map((id) => d.client.waitJob(id, 15_000)));
    const killMs = performance.now() - t1;
    const left = ended.filter((w) => !FINAL_STATES.has(w.job.state)).length;
    if (left) throw new Error(`${left} jobs still running after kill`);
    const after = await settledRss(d.pid);
    note(
      `${label} (pid ${d.pid}) VmRSS MB: at start ${show(atStart)}, idle ${show(idle)}, ` +
        `${JOBS} jobs ${show(busy)}, after they ended ${show(after)}, VmHWM ${mb(procStatusKb(d.pid, "VmHWM")).toFixed(1)}`,
    );
    note(
      `${JOBS} sequential POSTs took ${startMs.toFixed(0)} ms; killing all via the API and waiting ${killMs.toFixed(0)} ms; ` +
        `states: ${[...new Set(ended.map((w) => `${w.job.state}/${w.job.reason}`))].join(", ")}`,
    );
  });
}

export async function rssBench(): Promise<void> {
  header(`5. Daemon RSS (VmRSS): idle after warm-up, and with ${JOBS} running \`sleep 300\` jobs`);
  await measure("source");
  await ensureBinary();
  await measure("compiled");
}
