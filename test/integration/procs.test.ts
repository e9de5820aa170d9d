/**
 * A job's processes wherever they go, without scanning the host: processes that leave the tree
 * (a double fork, setsid, reparenting) are still signalled, counted against the job's limits and
 * swept when it is killed — followed by the tracker (`[monitor] cgroup = "off"`) and by the
 * job's cgroup (where planterd has one: root here). And a job adopted after a restart has its end
 * noticed at once, with the adoption poll set to a minute.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import { cleanup, type DaemonHandle, pidAlive, raw, startDaemon, tempHome, waitFor } from "../harness.ts";

const MiB = 1024 * 1024;
const BUN = process.execPath;
/** A child that holds `mb` MiB of touched memory until killed. */
const grow = (mb: number) => `${BUN} -e "globalThis.b=Buffer.alloc(${mb}*2**20,1);setInterval(()=>b[0]++,1e6)"`;

setDefaultTimeout(60_000);

const finished = async (d: DaemonHandle, id: string) => (await d.client.waitJob(id, 30_000)).job;

/** Wait for the pid a job's process wrote to `file`. */
const pidIn = (file: string): Promise<number> =>
  waitFor(() => (existsSync(file) ? Number(readFileSync(file, "utf8").trim()) : 0), `a pid in ${file}`);

async function enforcement(d: DaemonHandle): Promise<string> {
  return ((await raw(d.socket, "GET", "/v1/ready")).json as { limits: { enforcement: string } }).limits.enforcement;
}

/** Every pid a test left, SIGKILLed at the end whatever happened. */
const spare: number[] = [];
afterAll(() => {
  for (const p of spare) {
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  }
});

for (const mode of ["off", "auto"] as const) {
  describe(`processes that leave the tree (cgroup = "${mode}")`, () => {
    let d: DaemonHandle;
    beforeAll(async () => {
      d = await startDaemon({ config: `[monitor]\ninterval_ms = 100\ngrace_ms = 1000\ncgroup = "${mode}"\n` });
    });
    afterAll(async () => {
      await d.stop();
      cleanup(d.home);
    });

    test("a double-forked orphan (reparented, same session) gets the job's SIGTERM", async () => {
      if (mode === "off") expect(await enforcement(d)).toBe("monitor");
      const mark = join(d.home, `orphan-${mode}`);
      // The subshell exits at once: its child is reparented before planterd ever looks.
      const job = await d.client.createJob({
        argv: ["sh", "-c", `(sh -c 'echo $$ > ${mark}; exec sleep 300' &); sleep 300`],
      });
      const orphan = await pidIn(mark);
      spare.push(orphan);
      await d.client.killJob(job.id, {});
      await waitFor(() => !pidAlive(orphan), "the orphan to die of the job's SIGTERM", 5000);
      const f = await finished(d, job.id);
      expect([f.state, f.reason, f.signal]).toEqual(["killed", "terminated_by_user", "TERM"]);
    });

    test("a process that called setsid after its parent died, output still in the job's log, dies with the job", async () => {
      const mark = join(d.home, `escaped-${mode}`);
      const job = await d.client.createJob({
        argv: ["sh", "-c", `(setsid sh -c 'echo $$ > ${mark}; trap "" TERM; exec sleep 300' &); sleep 300`],
      });
      const escaped = await pidIn(mark);
      spare.push(escaped);
      await d.client.killJob(job.id, {});
      const f = await finished(d, job.id);
      expect([f.state, f.reason]).toEqual(["killed", "terminated_by_user"]);
      await waitFor(() => !pidAlive(escaped), "the escaped process to be swept with its killed job", 5000);
    });

    test("memory held by reparented children counts against the job's limit", async () => {
      const job = await d.client.createJob({
        argv: ["sh", "-c", `(${grow(80)} &); (${grow(80)} &); sleep 300`],
        limits: { max_rss_bytes: 160 * MiB },
      });
      const f = await finished(d, job.id);
      expect([f.state, f.reason]).toEqual(["killed", "memory_limit"]);
      expect(f.limit_exceeded?.value).toBeGreaterThan(160 * MiB);
    });

    test("orphans count against max_pids (a bounded tree, not a bomb)", async () => {
      const tree = "i=0; while [ $i -lt 100 ]; do (sleep 300 &); i=$((i+1)); done; sleep 300";
      const job = await d.client.createJob({ argv: ["sh", "-c", tree], limits: { max_pids: 64 } });
      const f: Job = await finished(d, job.id);
      expect([f.state, f.reason]).toEqual(["killed", "process_limit"]);
    });
  });
}

describe("an adopted job, watched without polling", () => {
  const home = tempHome();
  let d: DaemonHandle;
  beforeAll(async () => {
    // A poll a minute apart: an end noticed within seconds was not noticed by the poll.
    d = await startDaemon({ home, config: "[jobs]\nadopt_poll_ms = 60000\n" });
  });
  afterAll(async () => {
    await d.stop();
    cleanup(home);
  });

  test("its end is recorded at once, also when its recorder dies without writing a status", async () => {
    Bun.spawnSync(["mkfifo", join(home, "gate")]);
    const exits = await d.client.createJob({ argv: ["sh", "-c", `read l < ${join(home, "gate")}; exit 3`] });
    const vanishes = await d.client.createJob({ argv: ["sleep", "300"] });
    spare.push(vanishes.pid as number);
    await d.kill9();
    d = await startDaemon({ home });
    expect((await d.client.getJob(vanishes.id)).state).toBe("running");

    // Its program ends: the recorder writes the status and exits.
    await Bun.write(join(home, "gate"), "go\n");
    const a = await d.client.waitJob(exits.id, 10_000);
    expect([a.timed_out, a.job.state, a.job.exit_code]).toEqual([false, "failed", 3]);

    // The recorder itself is killed from outside: no status file, nothing inotify would see.
    process.kill(vanishes.pid as number, "SIGKILL");
    const b = await d.client.waitJob(vanishes.id, 10_000);
    expect([b.timed_out, b.job.state]).toEqual([false, "lost"]);
    try {
      process.kill(-(vanishes.pid as number), "SIGKILL"); // its sleep, orphaned
    } catch {}
  });
});
