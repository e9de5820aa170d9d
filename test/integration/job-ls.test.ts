/**
 * `planter job ls` on a long history: people get the latest 50 and are told what was left out,
 * scripts (--json) keep the whole list, and the API pages in either order.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { cleanup, cli, type DaemonHandle, raw, startDaemon, tempHome } from "../harness.ts";
import { seedJobs } from "../seed.ts";

const COUNT = 1205;
let d: DaemonHandle;
let ids: string[];
/** The seeded jobs of cell "other": every hundredth. */
let others: string[];

beforeAll(async () => {
  const home = tempHome();
  // Over a thousand: the API's largest page, so --all and --limit 1100 take two requests.
  ids = seedJobs(join(home, "state"), COUNT, { cell: (i) => (i % 100 === 0 ? "other" : "default") });
  others = ids.filter((_, i) => i % 100 === 0);
  d = await startDaemon({ home });
});
afterAll(async () => {
  await d.stop();
  cleanup(d.home);
});

/** The job ids of a `job ls` table, in the order shown. */
const rows = (stdout: string) =>
  stdout
    .trim()
    .split("\n")
    .slice(1)
    .map((l) => l.split(/\s+/)[0]);

const leftOut = (n: number, which = "jobs") =>
  `planter: the latest ${n} ${which} are shown, older ones are left out: --all lists every job, --limit N the latest N\n`;

describe("planter job ls for people", () => {
  test("shows the latest 50, oldest first, and says that older ones were left out", async () => {
    const r = await cli(d.home, ["job", "ls"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toMatch(/^ID\s+CELL\s+STATE\s+AGE\s+COMMAND$/);
    expect(rows(r.stdout)).toEqual(ids.slice(-50));
    expect(r.stderr).toBe(leftOut(50));
  });

  test("--limit N shows the latest N, across pages", async () => {
    const r = await cli(d.home, ["job", "ls", "--limit", "1100"]);
    expect(rows(r.stdout)).toEqual(ids.slice(-1100));
    expect(r.stderr).toBe(leftOut(1100));
    const few = await cli(d.home, ["job", "ls", "--limit", "3"]);
    expect(rows(few.stdout)).toEqual(ids.slice(-3));
  });

  test("nothing is said when nothing was left out", async () => {
    const exact = await cli(d.home, ["job", "ls", "--limit", String(COUNT)]);
    expect(rows(exact.stdout)).toEqual(ids);
    expect(exact.stderr).toBe("");
    const more = await cli(d.home, ["job", "ls", "--limit", "5000"]);
    expect(rows(more.stdout)).toEqual(ids);
    expect(more.stderr).toBe("");
  });

  test("--all shows every job, oldest first", async () => {
    const r = await cli(d.home, ["job", "ls", "--all"]);
    expect(rows(r.stdout)).toEqual(ids);
    expect(r.stderr).toBe("");
  });

  test("filters apply before the latest 50 are taken", async () => {
    const r = await cli(d.home, ["job", "ls", "--cell", "other"]);
    expect(rows(r.stdout)).toEqual(others);
    expect(r.stderr).toBe("");
    const failed = ids.filter((_, i) => i % 7 === 6);
    const f = await cli(d.home, ["job", "ls", "--state", "failed", "--limit", "10"]);
    expect(rows(f.stdout)).toEqual(failed.slice(-10));
    expect(f.stderr).toBe(leftOut(10, "matching jobs"));
  });

  test("--all with --limit is a usage error", async () => {
    const r = await cli(d.home, ["job", "ls", "--all", "--limit", "3"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("--all and --limit exclude each other");
  });
});

describe("planter job ls --json for scripts", () => {
  test("lists every job, oldest first, as it always has", async () => {
    const r = await cli(d.home, ["job", "ls", "--json"]);
    expect(r.stderr).toBe("");
    const jobs = JSON.parse(r.stdout) as { id: string }[];
    expect(jobs.map((j) => j.id)).toEqual(ids);
    const all = JSON.parse((await cli(d.home, ["job", "ls", "--json", "--all"])).stdout) as { id: string }[];
    expect(all).toEqual(jobs);
  });

  test("--limit N gives the latest N, oldest first, whole job objects", async () => {
    const r = await cli(d.home, ["job", "ls", "--json", "--limit", "2"]);
    expect(r.stderr).toBe("");
    const jobs = JSON.parse(r.stdout) as { id: string }[];
    expect(jobs).toEqual([await d.client.getJob(ids.at(-2) as string), await d.client.getJob(ids.at(-1) as string)]);
  });
});

describe("GET /v1/jobs?order=newest", () => {
  test("pages from the newest to the oldest with next_after", async () => {
    const p1 = await d.client.listJobs({ cell: "other", limit: 5, order: "newest" });
    expect(p1.jobs.map((j) => j.id)).toEqual(others.slice(-5).reverse());
    expect(p1.next_after).toBe(others.at(-5) as string);
    const p2 = await d.client.listJobs({ cell: "other", limit: 5, order: "newest", after: p1.next_after ?? "" });
    expect(p2.jobs.map((j) => j.id)).toEqual(others.slice(-10, -5).reverse());
    const last = await d.client.listJobs({ cell: "other", limit: 1000, order: "newest", after: others[2] });
    expect(last).toEqual({
      jobs: [await d.client.getJob(others[1] as string), await d.client.getJob(others[0] as string)],
      next_after: null,
    });
  });

  test("oldest first stays the default", async () => {
    const p = await d.client.listJobs({ limit: 3 });
    expect(p.jobs.map((j) => j.id)).toEqual(ids.slice(0, 3));
    expect(await d.client.listJobs({ limit: 3, order: "oldest" })).toEqual(p);
  });

  test("an unknown order is refused", async () => {
    const r = await raw(d.socket, "GET", "/v1/jobs?order=latest");
    expect(r.status).toBe(400);
    expect(r.json).toEqual({
      error: { code: "E_BAD_REQUEST", message: 'order must be oldest or newest, not "latest"' },
    });
  });
});

describe("pages bounded by bytes", () => {
  test("jobs with a 1 MiB argv: a page stops at 4 MiB of them, the CLI follows next_after to every job", async () => {
    const f = await startDaemon();
    try {
      const big = Array.from({ length: 4000 }, (_, i) => `${i}`.padEnd(250, "x"));
      const made: string[] = [];
      for (let i = 0; i < 6; i++) made.push((await f.client.createJob({ argv: ["true", ...big] })).id);
      const first = await f.client.listJobs({ limit: 1000 });
      expect(first.jobs.length).toBeGreaterThan(0);
      expect(first.jobs.length).toBeLessThan(6);
      expect(JSON.stringify(first).length).toBeLessThan(4 * 1024 * 1024 + 64 * 1024);
      expect(first.next_after).toBe(first.jobs[first.jobs.length - 1]?.id ?? "");
      const all = JSON.parse((await cli(f.home, ["job", "ls", "--json"])).stdout) as { id: string }[];
      expect(all.map((j) => j.id)).toEqual(made);
      const latest = (await cli(f.home, ["job", "ls", "--limit", "5"])).stdout;
      expect(rows(latest)).toEqual(made.slice(1));
    } finally {
      await f.stop();
      cleanup(f.home);
    }
  });
});
