/**
 * Warm sandboxes (lib/jobs/warm.ts): the next sandboxed job of a kind starts in a sandbox made
 * ahead. Real bubblewrap and cgroups (root); skipped where jobs get no cgroup.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { cleanup, type DaemonHandle, startDaemon, waitFor } from "../harness.ts";

/** Live processes whose stdout or stderr is a file of `home` (a warm sandbox's logs, FIFOs). */
function holders(home: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      if (/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2))) continue;
      if (["fd/1", "fd/2"].some((l) => readlinkSync(`/proc/${name}/${l}`).startsWith(home))) found.push(Number(name));
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

/** Whether the job's `job.started` event says it started in a warm sandbox. */
async function startedWarm(d: DaemonHandle, id: string): Promise<boolean> {
  for await (const e of d.client.events({ limit: 10_000 })) {
    const ev = e as unknown as { kind: string; subject: string; data: { warm?: boolean } };
    if (ev.kind === "job.started" && ev.subject === `job/${id}`) return ev.data.warm === true;
  }
  return false;
}

const warmDirs = (d: DaemonHandle) => {
  const dir = join(d.home, "state", "warm");
  return existsSync(dir) ? readdirSync(dir) : [];
};

/** Whether the warm sandbox `token`'s cgroup has members (any hierarchy planter made it in). */
function warmReady(token: string): boolean {
  const seek = (dir: string, depth: number): boolean => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return false;
    }
    if (names.includes(`w-${token}`)) {
      const procs = join(dir, `w-${token}`, "cgroup.procs");
      return existsSync(procs) && readFileSync(procs, "utf8").trim() !== "";
    }
    return depth > 0 && names.some((n) => !n.includes(".") && seek(join(dir, n), depth - 1));
  };
  return seek("/sys/fs/cgroup", 4);
}

const SCRIPT = "env | sort; pwd; umask; id -u; ls /proc/self/fd | wc -l; echo to-stderr >&2; exit 7";

describe("warm sandboxes", () => {
  let d: DaemonHandle;
  let cgroups = false;
  beforeAll(async () => {
    d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\nwarm_ms = 60000\n' });
    const probe = await d.client.createJob({ argv: ["true"] });
    cgroups = (await d.client.waitJob(probe.id, 20_000)).job.enforcement !== "monitor";
  });
  afterAll(async () => {
    await d.stop();
    cleanup(d.home);
  });

  const logs = async (id: string, stream: "stdout" | "stderr") =>
    Buffer.from((await d.client.logs(id, { stream })).data, "base64").toString();

  test("the next job starts in the sandbox made for it and sees what a cold start shows", async () => {
    if (!cgroups) return;
    const cold = await d.client.createJob({ argv: ["sh", "-c", SCRIPT] });
    const c = (await d.client.waitJob(cold.id, 20_000)).job;
    // One waits for the next job of the cell once its shell is in its group.
    // A host change between a sandbox's making and the job (another test's cell or home appearing
    // under the parallel lane) makes the plans differ and the job start cold: tried up to 3 times.
    let warm = cold;
    for (let attempt = 0; attempt < 3; attempt++) {
      await waitFor(() => warmDirs(d).length === 1, "a warm sandbox");
      // Ready once its shell is in its group (w-TOKEN): until then a job starts cold (lib/jobs/warm.ts).
      await waitFor(() => warmReady(warmDirs(d)[0] as string), "the warm sandbox's shell in its group", 30_000);
      warm = await d.client.createJob({ argv: ["sh", "-c", SCRIPT] });
      await d.client.waitJob(warm.id, 20_000);
      if (await startedWarm(d, warm.id)) break;
    }
    expect(await startedWarm(d, warm.id)).toBe(true);
    const w = (await d.client.waitJob(warm.id, 20_000)).job;
    expect([w.state, w.exit_code, w.reason]).toEqual([c.state, c.exit_code, c.reason]);
    expect([w.state, w.exit_code]).toEqual(["failed", 7]);
    const same = (s: string, id: string) => s.replace(id, "ID");
    expect(same(await logs(warm.id, "stdout"), warm.id)).toBe(same(await logs(cold.id, "stdout"), cold.id));
    expect(await logs(warm.id, "stderr")).toBe("to-stderr\n");
    // The job's own cgroup, renamed or not, is the one recorded and is gone after it.
    expect(w.enforcement).toBe(c.enforcement);
  });

  test("a job whose plan differs (a memory limit sizes its /tmp) starts cold; a job with its own cwd runs", async () => {
    if (!cgroups) return;
    await waitFor(() => warmDirs(d).length === 1, "a warm sandbox");
    // Ready, so that only the plan's difference can make the job start cold.
    await waitFor(() => warmReady(warmDirs(d)[0] as string), "the warm sandbox's shell in its group", 30_000);
    const other = await d.client.createJob({ argv: ["true"], limits: { max_rss_bytes: 512 * 1024 * 1024 } });
    expect(await startedWarm(d, other.id)).toBe(false);
    expect((await d.client.waitJob(other.id, 20_000)).job.state).toBe("exited");
    const sub = await d.client.createJob({ argv: ["pwd"], cwd: join(d.home, "state", "cells", "default") });
    expect((await d.client.waitJob(sub.id, 20_000)).job.state).toBe("exited");
  });

  test("a job with stdin starts cold: it reads its own pipe, and the warm sandboxes wait on for other jobs", async () => {
    if (!cgroups) return;
    const before = await d.client.createJob({ argv: ["cat"] });
    await d.client.waitJob(before.id, 20_000);
    // One for this kind of job (the last one's), ready.
    await waitFor(() => warmDirs(d).length >= 1, "a warm sandbox");
    await waitFor(() => warmDirs(d).every(warmReady), "the warm sandboxes' shells in their groups", 30_000);
    const waiting = warmDirs(d).sort();
    const j = await d.client.createJob({ argv: ["cat"], stdin: true });
    expect(await startedWarm(d, j.id)).toBe(false);
    await d.client.writeStdin(j.id, { data: Buffer.from("piped\n").toString("base64"), eof: true });
    expect((await d.client.waitJob(j.id, 20_000)).job.state).toBe("exited");
    expect(await logs(j.id, "stdout")).toBe("piped\n");
    // None of the waiting sandboxes was taken or dropped (one made meanwhile for an earlier job's
    // kind may have joined them: a full suite's load can finish that one late).
    const now = warmDirs(d);
    expect(waiting.filter((w) => !now.includes(w))).toEqual([]);
  }, 60_000);

  test("planterd killed while a sandbox waits: the sandbox ends without running anything, its dir goes after the next start", async () => {
    if (!cgroups) return;
    await waitFor(() => warmDirs(d).length >= 1, "a warm sandbox");
    await d.kill9();
    await waitFor(() => holders(d.home).length === 0, "the warm sandbox to end", 10_000);
    d = await startDaemon({ home: d.home, config: '[sandbox]\nmode = "enforced"\nwarm_ms = 60000\n' });
    // Removed once 10 s old (lib/jobs/warm.ts SWEEP_AGE_MS): a younger one may still be in its opens.
    await waitFor(() => warmDirs(d).length === 0, "the old warm dir removed", 25_000);
  });
});

test("a warm sandbox no job takes is given up after warm_ms: nothing of it is left", async () => {
  const d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\nwarm_ms = 500\n' });
  try {
    const j = await d.client.createJob({ argv: ["true"] });
    const done = (await d.client.waitJob(j.id, 20_000)).job;
    if (done.enforcement === "monitor") return;
    await waitFor(() => warmDirs(d).length === 0 && holders(d.home).length === 0, "the warm sandbox given up", 10_000);
  } finally {
    await d.stop();
    cleanup(d.home);
  }
});
